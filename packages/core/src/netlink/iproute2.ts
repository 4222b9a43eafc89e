import { Effect, Layer, Schema } from "effect"
import { runProcess } from "#run"
import * as fs from "node:fs"
import * as path from "node:path"
import { NetlinkFailure } from "../errors.ts"
import { describeIssue } from "../issue.ts"
import { type InterfaceAddress, type Link, Netlink, type Route, type Step } from "./Netlink.ts"

/** The live Netlink: `ip -json` to read, `ip -batch -` to write, `nsenter --net=PATH` to enter a namespace. */

const IpLink = Schema.Struct({
  ifindex: Schema.Number,
  ifname: Schema.String,
  flags: Schema.Array(Schema.String),
  mtu: Schema.Number,
  link_type: Schema.optional(Schema.String),
  address: Schema.optional(Schema.String),
  ifalias: Schema.optional(Schema.String)
})

const IpAddr = Schema.Struct({
  addr_info: Schema.Array(Schema.Struct({
    family: Schema.String,
    local: Schema.String,
    prefixlen: Schema.Number,
    scope: Schema.optional(Schema.String)
  }))
})

const IpRoute = Schema.Struct({
  dst: Schema.String,
  gateway: Schema.optional(Schema.String),
  dev: Schema.optional(Schema.String),
  scope: Schema.optional(Schema.String)
})

const SAFE = /^[A-Za-z0-9_.:/@-]+$/

interface Exec {
  readonly stdout: string
  readonly stderr: string
  readonly code: number
}

const exec = (argv: ReadonlyArray<string>, netns: string | undefined, stdin?: string) =>
  Effect.flatMap(
    Effect.promise(() => {
      const [file, ...args] = netns === undefined ? argv : ["nsenter", `--net=${netns}`, "--", ...argv]
      return runProcess(file!, args, { stdin })
    }),
    (done): Effect.Effect<Exec, NetlinkFailure> =>
      done._tag === "Exited" ? Effect.succeed(done) : Effect.fail(
        new NetlinkFailure({
          message: `cannot run ${netns === undefined ? argv[0] : "nsenter"}: ${done.reason}; is iproute2 (and util-linux's nsenter) installed?`
        })
      )
  )

const where = (netns: string | undefined) => (netns === undefined ? "" : ` in ${netns}`)

const firstLine = (text: string) => text.trim().split("\n")[0] ?? ""

const MISSING = /does not exist|Cannot find device/

/** `ip -json ARGV` decoded as an array of `schema`; undefined when `orMissing` and the device is absent. */
const readJson = <S extends Schema.Top>(
  schema: S,
  what: string,
  argv: ReadonlyArray<string>,
  netns: string | undefined,
  orMissing = false
) =>
  Effect.gen(function*() {
    const out = yield* exec(["ip", "-json", ...argv], netns)
    if (out.code !== 0 && orMissing && MISSING.test(out.stderr)) return undefined
    if (out.code !== 0) {
      return yield* new NetlinkFailure({ message: `ip ${argv.join(" ")}${where(netns)} failed: ${firstLine(out.stderr)}` })
    }
    const json = yield* Effect.try({
      try: () => (out.stdout.trim() === "" ? [] : JSON.parse(out.stdout)) as unknown,
      catch: () => new NetlinkFailure({ message: `ip ${argv.join(" ")} printed no JSON: is iproute2 older than 4.14?` })
    })
    return yield* decodeJson(schema, what, json, `ip ${argv.join(" ")}`)
  })

const decodeJson = <S extends Schema.Top>(schema: S, what: string, json: unknown, command: string) =>
  Schema.decodeUnknownEffect(Schema.Array(schema))(json).pipe(
    Effect.mapError((e) => new NetlinkFailure({ message: `unexpected ${what} from ${command} -json: ${describeIssue(e.issue)}` }))
  )

const toLink = (l: typeof IpLink.Type): Link => ({
  name: l.ifname,
  index: l.ifindex,
  mtu: l.mtu,
  mac: l.address,
  up: l.flags.includes("UP"),
  type: l.link_type ?? "unknown",
  alias: l.ifalias
})

const mtuWords = (mtu: number | undefined) => (mtu === undefined ? "" : ` mtu ${mtu}`)

export const renderStep = (step: Step): string => {
  switch (step.op) {
    case "veth":
      return `link add ${step.name}${mtuWords(step.mtu)} type veth peer name ${step.peerName}${mtuWords(step.mtu)} netns ${step.peerNetns}`
    case "show":
      return `link show dev ${step.dev}`
    case "up":
      return `link set dev ${step.dev} up`
    case "mtu":
      return `link set dev ${step.dev} mtu ${step.mtu}`
    case "address":
      return [`address add ${step.cidr} dev ${step.dev}`, ...(step.flags ?? [])].join(" ")
    case "route":
      return `route add ${step.dst}${step.via === undefined ? "" : ` via ${step.via}`} dev ${step.dev}` +
        (step.scope === undefined ? "" : ` scope ${step.scope}`)
    case "alias":
      return `link set dev ${step.dev} alias ${step.alias}`
    case "delete":
      return `link delete dev ${step.dev}`
  }
}

const stepWords = (step: Step): ReadonlyArray<string> => Object.values(step).flat().map(String)

const isExecutable = (file: string) => {
  try {
    fs.accessSync(file, fs.constants.X_OK)
    return true
  } catch {
    return false
  }
}

/** /proc/sys shows the reader's own namespace, so the caller's sysctls need no exec; unchanged values are not written. */
const writeOwnSysctl = (key: string, value: string) =>
  Effect.try({
    try: () => {
      const file = `/proc/sys/${key.replaceAll(".", "/")}`
      if (fs.readFileSync(file, "utf8").trim() !== value) fs.writeFileSync(file, value)
    },
    catch: (e) => new NetlinkFailure({ message: `cannot set ${key}=${value}: ${(e as Error).message}` })
  })

const make = (): Netlink["Service"] => {
  const links = (netns?: string) => Effect.map(readJson(IpLink, "links", ["link", "show"], netns), (ls) => (ls ?? []).map(toLink))

  const link = (name: string, netns?: string) =>
    Effect.map(readJson(IpLink, "links", ["link", "show", "dev", name], netns, true), (found) =>
      found?.[0] === undefined ? undefined : toLink(found[0]))

  const apply = (steps: ReadonlyArray<Step>, netns?: string) =>
    Effect.gen(function*() {
      if (steps.length === 0) return []
      const unsafe = steps.find((s) => !stepWords(s).every((w) => SAFE.test(w)))
      if (unsafe !== undefined) {
        return yield* new NetlinkFailure({ message: `refusing a step with unexpected characters: ${JSON.stringify(unsafe)}` })
      }
      const lines = steps.map(renderStep)
      const out = yield* exec(["ip", "-json", "-batch", "-"], netns, lines.join("\n") + "\n")
      if (out.code !== 0) {
        const failed = /Command failed -:(\d+)/.exec(out.stderr)
        const index = failed === null ? -1 : Number(failed[1]) - 1
        const reason = firstLine(out.stderr.replace(/Command failed -:\d+\s*/g, ""))
        const known = index >= 0 && index < lines.length
        return yield* new NetlinkFailure({
          message: known
            ? `step ${index + 1} of ${lines.length}${where(netns)} failed: "ip ${lines[index]}": ${reason}`
            : `ip -batch${where(netns)} failed: ${reason}`,
          failedOp: known ? steps[index]!.op : undefined,
          exists: /File exists/.test(reason)
        })
      }
      const json = yield* Effect.try({
        try: () => out.stdout.split("\n").filter((l) => l.startsWith("[")).flatMap((l) => JSON.parse(l) as Array<unknown>),
        catch: () => new NetlinkFailure({ message: `ip -batch${where(netns)} printed a line that is not JSON: is iproute2 older than 4.14?` })
      })
      return (yield* decodeJson(IpLink, "links", json, "ip -batch")).map(toLink)
    })

  const mustFind = (name: string, netns?: string) =>
    Effect.flatMap(link(name, netns), (l) =>
      l === undefined
        ? Effect.fail(new NetlinkFailure({ message: `link ${name}${where(netns)} is missing right after it was created` }))
        : Effect.succeed(l))

  return Netlink.of({
    ready: Effect.suspend(() => {
      const dirs = (process.env["PATH"] ?? "").split(":").filter((d) => d !== "")
      const missing = ["ip", "nsenter"].filter((tool) => !dirs.some((dir) => isExecutable(path.join(dir, tool))))
      return missing.length === 0 ? Effect.void : Effect.fail(
        new NetlinkFailure({
          message: `${missing.join(" and ")} not found in PATH (${dirs.join(":")}): install iproute2 and util-linux, or fix PATH`
        })
      )
    }),
    links,
    link,
    addresses: (dev, netns) =>
      Effect.map(readJson(IpAddr, "addresses", ["address", "show", "dev", dev], netns), (entries) =>
        (entries ?? []).flatMap((e) =>
          e.addr_info.map((a): InterfaceAddress => ({
            family: a.family === "inet6" ? 6 : 4,
            ip: a.local,
            prefix: a.prefixlen,
            scope: a.scope
          }))
        )),
    routes: (family, netns) =>
      Effect.map(readJson(IpRoute, "routes", [`-${family}`, "route", "show"], netns), (rs) =>
        (rs ?? []).map((r): Route => ({ dst: r.dst, gateway: r.gateway, dev: r.dev, scope: r.scope }))),
    apply,
    createVeth: ({ netns, ...veth }) =>
      Effect.gen(function*() {
        const [host] = yield* apply([{ op: "veth", ...veth }, { op: "show", dev: veth.name }], netns)
        return { host: host!, peer: yield* mustFind(veth.peerName, veth.peerNetns) }
      }),
    deleteLink: (name, netns) =>
      Effect.gen(function*() {
        if (!SAFE.test(name)) return yield* new NetlinkFailure({ message: `refusing link name ${JSON.stringify(name)}` })
        const out = yield* exec(["ip", "link", "delete", "dev", name], netns)
        if (out.code === 0) return true
        if (MISSING.test(out.stderr)) return false
        return yield* new NetlinkFailure({ message: `cannot delete link ${name}${where(netns)}: ${firstLine(out.stderr)}` })
      }),
    createTun: (name, netns) =>
      Effect.gen(function*() {
        if (!SAFE.test(name)) return yield* new NetlinkFailure({ message: `refusing link name ${JSON.stringify(name)}` })
        const out = yield* exec(["ip", "tuntap", "add", "dev", name, "mode", "tun"], netns)
        if (out.code !== 0) {
          return yield* new NetlinkFailure({ message: `cannot create TUN device ${name}${where(netns)}: ${firstLine(out.stderr)}` })
        }
        return yield* mustFind(name, netns)
      }),
    setSysctl: (key, value, netns) =>
      Effect.gen(function*() {
        if (!/^[a-z0-9_.-]+$/.test(key) || !/^[A-Za-z0-9_.-]+$/.test(value)) {
          return yield* new NetlinkFailure({ message: `refusing sysctl ${JSON.stringify(key)}=${JSON.stringify(value)}` })
        }
        if (netns === undefined) return yield* writeOwnSysctl(key, value)
        const out = yield* exec(["sysctl", "-q", "-w", `${key}=${value}`], netns)
        if (out.code !== 0) {
          return yield* new NetlinkFailure({ message: `cannot set ${key}=${value}${where(netns)}: ${firstLine(out.stderr)}` })
        }
      })
  })
}

export const layerIproute2 = Layer.sync(Netlink, make)

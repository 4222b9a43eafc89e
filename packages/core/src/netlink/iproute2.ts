import { Effect, Layer, Schema } from "effect"
import { execFile } from "node:child_process"
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
  Effect.callback<Exec, NetlinkFailure>((resume) => {
    const [file, ...args] = netns === undefined ? argv : ["nsenter", `--net=${netns}`, "--", ...argv]
    const child = execFile(file!, args, { encoding: "utf8", maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1
      if (code === -1) {
        resume(Effect.fail(new NetlinkFailure({ message: `cannot run ${file}: ${error!.message}; is iproute2 (and util-linux's nsenter) installed?` })))
      } else {
        resume(Effect.succeed({ stdout, stderr, code }))
      }
    })
    child.stdin?.on("error", () => {}) // the program may exit without reading its input: its exit code tells
    child.stdin?.end(stdin ?? "")
  })

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
    return yield* Schema.decodeUnknownEffect(Schema.Array(schema))(json).pipe(
      Effect.mapError((e) => new NetlinkFailure({ message: `unexpected ${what} from ip -json: ${describeIssue(e.issue)}` }))
    )
  })

const toLink = (l: typeof IpLink.Type): Link => ({
  name: l.ifname,
  index: l.ifindex,
  mtu: l.mtu,
  mac: l.address,
  up: l.flags.includes("UP"),
  type: l.link_type ?? "unknown",
  alias: l.ifalias
})

export const renderStep = (step: Step): string => {
  switch (step.op) {
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

const make = (): Netlink["Service"] => {
  const links = (netns?: string) => Effect.map(readJson(IpLink, "links", ["link", "show"], netns), (ls) => (ls ?? []).map(toLink))

  const link = (name: string, netns?: string) =>
    Effect.map(readJson(IpLink, "links", ["link", "show", "dev", name], netns, true), (found) =>
      found?.[0] === undefined ? undefined : toLink(found[0]))

  const apply = (steps: ReadonlyArray<Step>, netns?: string) =>
    Effect.gen(function*() {
      if (steps.length === 0) return
      const unsafe = steps.find((s) => !stepWords(s).every((w) => SAFE.test(w)))
      if (unsafe !== undefined) {
        return yield* new NetlinkFailure({ message: `refusing a step with unexpected characters: ${JSON.stringify(unsafe)}` })
      }
      const lines = steps.map(renderStep)
      const out = yield* exec(["ip", "-batch", "-"], netns, lines.join("\n") + "\n")
      if (out.code === 0) return
      const failed = /Command failed -:(\d+)/.exec(out.stderr)
      const index = failed === null ? -1 : Number(failed[1]) - 1
      const reason = firstLine(out.stderr.replace(/Command failed -:\d+\s*/g, ""))
      return yield* new NetlinkFailure({
        message: index >= 0 && index < lines.length
          ? `step ${index + 1} of ${lines.length}${where(netns)} failed: "ip ${lines[index]}": ${reason}`
          : `ip -batch${where(netns)} failed: ${reason}`
      })
    })

  const mustFind = (name: string, netns?: string) =>
    Effect.flatMap(link(name, netns), (l) =>
      l === undefined
        ? Effect.fail(new NetlinkFailure({ message: `link ${name}${where(netns)} is missing right after it was created` }))
        : Effect.succeed(l))

  return Netlink.of({
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
    createVeth: (request) =>
      Effect.gen(function*() {
        const words = [request.name, request.peerName, request.peerNetns]
        if (!words.every((w) => SAFE.test(w))) {
          return yield* new NetlinkFailure({ message: `refusing veth names or path with unexpected characters: ${words.join(" ")}` })
        }
        const mtu = request.mtu === undefined ? [] : ["mtu", String(request.mtu)]
        const argv = ["ip", "link", "add", request.name, ...mtu, "type", "veth", "peer", "name", request.peerName, ...mtu, "netns", request.peerNetns]
        const out = yield* exec(argv, request.netns)
        if (out.code !== 0) {
          return yield* new NetlinkFailure({
            message: `cannot create veth ${request.name}${where(request.netns)} with peer ${request.peerName} in ${request.peerNetns}: ${firstLine(out.stderr)}`
          })
        }
        return { host: yield* mustFind(request.name, request.netns), peer: yield* mustFind(request.peerName, request.peerNetns) }
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
        const out = yield* exec(["sysctl", "-q", "-w", `${key}=${value}`], netns)
        if (out.code !== 0) {
          return yield* new NetlinkFailure({ message: `cannot set ${key}=${value}${where(netns)}: ${firstLine(out.stderr)}` })
        }
      })
  })
}

export const layerIproute2 = Layer.sync(Netlink, make)

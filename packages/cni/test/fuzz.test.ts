import { filesUnder, netnsScope, processesWith } from "@containerscale/testing"
import { distBin } from "@containerscale/sandbox"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import fc from "fast-check"
import { execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"


/** A fixed seed keeps the suite deterministic; set FUZZ_SEED to explore others (fast-check prints the seed of a failure). */
const SEED = Number(process.env["FUZZ_SEED"] ?? 20261203)
/**
 * Random and boundary values at the CNI edge (the network config on stdin and the CNI_*
 * environment) of both compiled plugins, run inside a throwaway node namespace: each bad input
 * gets a CNI error object (a numeric code and a message, no stack trace) and changes nothing: no
 * link, no namespace, no file in the state and IPAM directories, no tailscaled.
 */

const scope = netnsScope()
let node = ""
let ctr = ""
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-cni-fuzz-"))
const stateDir = path.join(dir, "state")
const dataDir = path.join(dir, "ipam")
const cwd = path.join(dir, "cwd")

beforeAll(() => {
  node = scope.create("node")
  ctr = scope.create("ctr")
  fs.mkdirSync(stateDir)
  fs.mkdirSync(cwd)
})
afterAll(() => {
  scope.dispose()
  fs.rmSync(dir, { recursive: true, force: true })
})

const snapshot = () => ({
  links: execFileSync("ip", ["-n", node, "-o", "link"], { encoding: "utf8" }).split("\n").map((l) => l.split(":")[1]?.trim()).sort(),
  inside: execFileSync("ip", ["-n", ctr, "-o", "link"], { encoding: "utf8" }).split("\n").map((l) => l.split(":")[1]?.trim()).sort(),
  namespaces: fs.readdirSync("/run/netns").filter((n) => n.startsWith(scope.prefix)).sort(),
  files: filesUnder(dir).sort(),
  tailscaled: processesWith(`--socket=${stateDir}`)
})

const router = () => ({
  cniVersion: "1.1.0",
  name: "fuzz",
  type: "containerscale",
  mode: "router",
  stateDir,
  ipam: { type: "containerscale-ipam", dataDir, ranges: [[{ subnet: "10.212.0.0/24" }]] }
})

const member = () => ({
  cniVersion: "1.1.0",
  name: "fuzz",
  type: "containerscale",
  stateDir,
  authKey: "hskey-auth-fuzz",
  loginServer: "http://127.0.0.1:1",
  tailscaledPath: path.join(path.dirname(distBin()), "testing-bin", "tailscaled"),
  prevResult: { cniVersion: "1.1.0", interfaces: [{ name: "eth0", sandbox: "/x" }], ips: [{ address: "10.212.1.2/24", interface: 0 }] }
})

/** Values of every JSON type and some that break naive code: huge, empty, odd characters. */
const anything = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.double(),
  fc.integer(),
  fc.string(),
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.constantFrom("", " ", "\u0000", "../..", "a".repeat(5000), "{{}}", "-1", "1e309", "true", "__proto__"),
  fc.array(fc.string(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.string(), { maxKeys: 3 })
)

const notIn = (values: ReadonlyArray<unknown>) => anything.filter((v) => !values.includes(v as never))
const badName = fc.oneof(
  notIn([]).filter((v) => typeof v !== "string" || !/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$/.test(v)),
  fc.constant("n".repeat(256))
)
const badIfname = fc.oneof(
  fc.constantFrom("", ".", "..", "a/b", "a:b", "a b", "eth0\n", "x".repeat(16), "é".repeat(8)),
  fc.string({ minLength: 16, maxLength: 40 })
)
const badId = fc.oneof(fc.constantFrom("", "-lead", ".lead", "a b", "a/b", "a:b"), fc.string().filter((s) => !/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(s)))

type Sample = { readonly config: unknown; readonly env: Record<string, string> }
const env = (extra: Record<string, string> = {}): Record<string, string> => ({
  CNI_COMMAND: "ADD",
  CNI_CONTAINERID: "fuzz1",
  CNI_IFNAME: "eth0",
  CNI_NETNS: `/run/netns/${ctr}`,
  CNI_PATH: distBin(),
  ...extra
})

/** One known-bad change to a valid request: a key of the config, a variable of the environment, or stdin itself. */
const corrupt = (
  base: () => Record<string, unknown>,
  keys: Record<string, fc.Arbitrary<unknown>>,
  usesNetns = true
): fc.Arbitrary<Sample> =>
  fc.oneof(
    ...Object.entries(keys).map(([key, bad]) =>
      bad.map((value): Sample => {
        const config = base()
        const [head, tail] = key.split(".") as [string, string | undefined]
        if (tail === undefined) config[head] = value
        else config[head] = { ...(config[head] as object), [tail]: value }
        return { config, env: env() }
      })
    ),
    badName.map((name): Sample => ({ config: { ...base(), name }, env: env() })),
    badIfname.map((CNI_IFNAME): Sample => ({ config: base(), env: env({ CNI_IFNAME }) })),
    badId.map((CNI_CONTAINERID): Sample => ({ config: base(), env: env({ CNI_CONTAINERID }) })),
    fc.constantFrom(...(usesNetns ? ["/nonexistent/netns", "relative", "/proc", ""] : ["/proc"])).map((CNI_NETNS): Sample => ({
      config: base(),
      env: env(usesNetns ? { CNI_NETNS } : { CNI_NETNS, CNI_COMMAND: "BOGUS" })
    })),
    fc.string({ maxLength: 12 }).filter((c) => !["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"].includes(c)).map((CNI_COMMAND): Sample => ({
      config: base(),
      env: env({ CNI_COMMAND })
    })),
    fc.oneof(fc.string(), fc.constantFrom("[]", "1", "null", "\"x\"", "{", "")).filter((s) => {
      try {
        const v: unknown = JSON.parse(s)
        return typeof v !== "object" || v === null || Array.isArray(v)
      } catch {
        return true
      }
    }).map((stdin): Sample => ({ config: stdin, env: env() }))
  )

/** Runs a plugin in the node namespace, from a working directory inside the test's folder (so a relative path lands there). */
const run = (binary: string, sample: Sample) =>
  new Promise<{ exitCode: number | null; stdout: string }>((resolve, reject) => {
    const child = spawn("ip", ["netns", "exec", node, binary], { cwd, env: { PATH: process.env["PATH"], ...sample.env }, timeout: 30_000 })
    let stdout = ""
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d))
    child.on("error", reject)
    child.on("close", (exitCode) => resolve({ exitCode, stdout }))
    child.stdin.on("error", () => {})
    child.stdin.end(typeof sample.config === "string" ? sample.config : JSON.stringify(sample.config))
  })

const expectRefused = async (binary: string, sample: Sample) => {
  const before = snapshot()
  const out = await run(binary, sample)
  const where = `${JSON.stringify(sample).slice(0, 400)} -> ${out.stdout.slice(0, 300)}`
  assert.strictEqual(out.exitCode, 1, where)
  const error = JSON.parse(out.stdout) as { code: unknown; msg: unknown }
  assert.isNumber(error.code, where)
  assert.isString(error.msg, where)
  assert.notMatch(error.msg as string, /\n\s+at /, where)
  assert.deepStrictEqual(snapshot(), before, where)
}

describe("fuzzing the CNI edge", () => {
  it("containerscale in router mode refuses bad configs and environments, changing nothing", async () => {
    const keys = {
      cniVersion: fc.oneof(notIn([]).filter((v) => typeof v !== "string"), fc.constantFrom("0.1.0", "9.9.9", "one")),
      mode: notIn(["router", "member", undefined]),
      mtu: fc.oneof(fc.integer({ max: 575 }), fc.integer({ min: 65536 }), fc.double().filter((d) => !Number.isInteger(d)), fc.string()),
      interface: badIfname,
      ipam: notIn([]).filter((v) => typeof v !== "object" || v === null || Array.isArray(v) || !("ranges" in v)),
      "ipam.ranges": notIn([]).filter((v) => !Array.isArray(v) || v.length === 0 || !Array.isArray(v[0])),
      "ipam.strategy": notIn(["sequential", "random", "dense", undefined]),
      "ipam.dataDir": fc.oneof(fc.constantFrom("", "relative/dir", "."), notIn([]).filter((v) => typeof v !== "string"))
    }
    await fc.assert(fc.asyncProperty(corrupt(router, keys), (s) => expectRefused(path.join(distBin(), "containerscale"), s)), { numRuns: 80, seed: SEED })
  })

  it("containerscale in member mode refuses bad options, starting no tailscaled", async () => {
    const keys = {
      loginServer: fc.oneof(fc.constantFrom("ftp://x", "not a url", ""), notIn([]).filter((v) => typeof v !== "string")),
      tags: fc.oneof(fc.constant(["tag:a b"]), fc.constant(["tag:é"]), notIn([]).filter((v) => !Array.isArray(v))),
      timeoutSeconds: fc.oneof(fc.integer({ max: 0 }), fc.integer({ min: 601 }), fc.string()),
      tailscaledPath: fc.constantFrom("", "relative/tailscaled"),
      authKeyFile: fc.constantFrom("relative/key", "/nonexistent/key", ""),
      authKeyEnv: fc.constantFrom("1BAD", "a b", "NOT_SET_ANYWHERE"),
      tailscaleFlags: fc.oneof(fc.constant(["--exit-node=1.2.3.4"]), fc.constant(["nonsense"]), fc.constant(["--timeout", "x"])),
      tailscaledFlags: fc.constantFrom(["--socket=/tmp/x"], ["-statedir", "/tmp"], ["--tun=x"]),
      prevResult: fc.oneof(fc.constant({ cniVersion: "1.1.0", code: 7, msg: "x" }), fc.constantFrom("x", 1, [], null))
    }
    await fc.assert(fc.asyncProperty(corrupt(member, keys), (s) => expectRefused(path.join(distBin(), "containerscale"), s)), { numRuns: 80, seed: SEED })
  })

  it("containerscale-ipam refuses bad configs and environments, changing nothing", async () => {
    const ipam = () => ({ ...router(), type: "containerscale-ipam", ipam: { type: "containerscale-ipam", dataDir, subnet: "10.212.0.0/24" } })
    const keys = {
      "ipam.subnet": fc.constantFrom("10.0.0.0/33", "999.1.1.1/8", "banana", ""),
      "ipam.dataDir": fc.constantFrom("", "relative/dir", "."),
      "ipam.exclude": notIn([]).filter((v) => !Array.isArray(v)),
      "ipam.rangeStart": fc.constantFrom("10.99.0.5", "x")
    }
    // the IPAM plugin does not use the namespace: a missing one is no error of its own
    await fc.assert(fc.asyncProperty(corrupt(ipam, keys, false), (s) => expectRefused(path.join(distBin(), "containerscale-ipam"), s)), {
      numRuns: 80,
      seed: SEED
    })
  })
})

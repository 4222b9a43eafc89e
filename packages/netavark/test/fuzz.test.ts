import { filesUnder, netnsScope } from "@containerscale/testing"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import fc from "fast-check"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { NET_ID, runPlugin } from "./helpers.ts"


/** A fixed seed keeps the suite deterministic; set FUZZ_SEED to explore others (fast-check prints the seed of a failure). */
const SEED = Number(process.env["FUZZ_SEED"] ?? 20261203)
/**
 * Random and boundary values in what netavark hands the plugin (the network of `create`, the
 * call of `setup` and `teardown`, the namespace argument), run inside a throwaway node namespace:
 * each bad request gets `{"error": ...}` (one line, exit 1) and changes nothing: no link in the
 * node's or the container's namespace, no file in the state directory, no tailscaled.
 */

const scope = netnsScope()
let node = ""
let ctr = ""
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-nv-fuzz-"))

beforeAll(() => {
  node = scope.create("node")
  ctr = scope.create("ctr")
})
afterAll(() => {
  scope.dispose()
  fs.rmSync(dir, { recursive: true, force: true })
})

const links = (ns: string) => execFileSync("ip", ["-n", ns, "-o", "link"], { encoding: "utf8" }).split("\n").map((l) => l.split(":")[1]?.trim()).sort()
const snapshot = () => ({ node: links(node), ctr: links(ctr), files: filesUnder(dir).sort() })

const anything = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.double(),
  fc.string(),
  fc.constantFrom("", "a".repeat(5000), "__proto__", "a:b", "../x"),
  fc.array(fc.oneof(fc.string(), fc.integer()), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.string(), { maxKeys: 3 })
)
const notString = anything.filter((v) => typeof v !== "string")

const network = (options: Record<string, string> = {}) => ({
  name: "fuzz",
  id: NET_ID,
  driver: "containerscale-netavark",
  network_interface: "",
  subnets: [{ subnet: "10.238.9.0/24", gateway: "10.238.9.1" }],
  ipv6_enabled: false,
  internal: false,
  dns_enabled: false,
  options: { mode: "router", state_dir: dir, ...options },
  ipam_options: { driver: "host-local" }
})

const call = () => ({
  container_id: "f".repeat(64),
  container_name: "fuzz",
  port_mappings: null,
  network: network(),
  network_options: { interface_name: "eth0", static_ips: ["10.238.9.5"] }
})

const badOption = fc.oneof(
  ...Object.entries({
    mode: fc.constantFrom("bridge", ""),
    mtu: fc.constantFrom("20", "x", "99999", ""),
    state_dir: fc.constantFrom("relative", ""),
    tags: fc.constantFrom("tag:x"),
    bogus: fc.string()
  }).map(([k, bad]) => bad.map((v) => ({ [k]: v })))
)

const createSample = fc.oneof(
  fc.constantFrom("name", "id", "driver").chain((k) => notString.map((v) => ({ ...network(), [k]: v }))),
  fc.constantFrom("fuzz:bad", "a b", "-lead", "n".repeat(300)).map((name) => ({ ...network(), name })),
  fc.oneof(fc.constant([{ subnet: "banana" }]), fc.constant([{ subnet: "10.0.0.0/33" }]), fc.constant([{ subnet: "10.1.2.3/24" }]), fc.constant([]), notString.filter((v) => v !== null))
    .map((subnets) => ({ ...network(), subnets })),
  fc.constant({ driver: "none" }).map((ipam_options) => ({ ...network(), ipam_options })),
  badOption.map((o) => network(o)),
  fc.constantFrom({ mode: "member" }, { mode: "member", auth_key_env: "NOT_SET" }, { mode: "member", auth_key_file: "relative" }).map((o) => network(o))
)

const setupSample = fc.oneof(
  notString.map((v) => ({ ...call(), container_id: v })),
  fc.constantFrom("", "a/b", "x".repeat(16), "a b").map((interface_name) => ({ ...call(), network_options: { ...call().network_options, interface_name } })),
  fc.oneof(fc.constant(["10.99.0.5"]), fc.constant(["banana"]), fc.constant([]), notString.filter((v) => v !== null && !Array.isArray(v)))
    .map((static_ips) => ({ ...call(), network_options: { ...call().network_options, static_ips } })),
  badOption.map((o) => ({ ...call(), network: network(o) })),
  anything.filter((v) => typeof v !== "object" || v === null || Array.isArray(v)).map((v) => ({ ...call(), network: v }))
)

const expectRefused = async (args: ReadonlyArray<string>, input: unknown) => {
  const before = snapshot()
  const o = await runPlugin(args, input as object, { node })
  const where = `${args.join(" ")} ${JSON.stringify(input).slice(0, 300)} -> ${o.stdout.slice(0, 300)}`
  assert.strictEqual(o.exitCode, 1, where)
  assert.deepStrictEqual(Object.keys(o.json ?? {}), ["error"], where)
  assert.notMatch(o.json.error, /\n\s+at /, where)
  assert.deepStrictEqual(snapshot(), before, where)
}

describe("fuzzing the Netavark edge", () => {
  it("create refuses bad networks", async () => {
    await fc.assert(fc.asyncProperty(createSample, (n) => expectRefused(["create"], n)), { numRuns: 80, seed: SEED })
  })

  it("setup refuses bad calls and namespaces, wiring nothing", async () => {
    const netns = () => `/run/netns/${ctr}`
    const sample = fc.oneof(
      setupSample.map((c) => ({ args: ["setup", netns()], input: c as unknown })),
      fc.constantFrom("/nonexistent/netns", "/proc", "relative").map((ns) => ({ args: ["setup", ns], input: call() as unknown })),
      fc.oneof(fc.string(), fc.constantFrom("{", "[]", "1")).map((text) => ({ args: ["setup", netns()], input: text as unknown }))
    )
    await fc.assert(fc.asyncProperty(sample, ({ args, input }) => expectRefused(args, input)), { numRuns: 80, seed: SEED })
  })

  it("teardown refuses requests it cannot read", async () => {
    const sample = fc.oneof(
      notString.map((v) => ({ ...call(), container_id: v })),
      anything.filter((v) => typeof v !== "object" || v === null || Array.isArray(v)).map((v) => ({ ...call(), network_options: v }))
    )
    await fc.assert(fc.asyncProperty(sample, (c) => expectRefused(["teardown", `/run/netns/${ctr}`], c)), { numRuns: 40, seed: SEED })
  })
})

import { netnsPath, netnsScope } from "@containerscale/testing"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import fc from "fast-check"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { hex64, type Running, startDriver, tempDir } from "./helpers.ts"


/** A fixed seed keeps the suite deterministic; set FUZZ_SEED to explore others (fast-check prints the seed of a failure). */
const SEED = Number(process.env["FUZZ_SEED"] ?? 20261203)
/**
 * Random and boundary values in the libnetwork requests the driver decodes (NetworkDriver and
 * IpamDriver), against a driver working in a throwaway node namespace: each bad request gets the
 * protocol's error (`Err` / `Error`, or 400 for a body that is not JSON), one line, and changes
 * nothing: no link, no file in the driver's state directory.
 */

const scope = netnsScope()
let node = ""
const dir = tempDir("fuzz")
let d: Running

beforeAll(async () => {
  node = scope.create("node")
  d = await startDriver({ dir, nodeNetns: netnsPath(node) })
})
afterAll(async () => {
  await d?.close()
  scope.dispose()
  fs.rmSync(dir, { recursive: true, force: true })
})

const files = (root: string): Array<string> =>
  fs.existsSync(root)
    ? fs.readdirSync(root, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? [path.join(root, e.name), ...files(path.join(root, e.name))] : [`${path.join(root, e.name)} ${fs.readFileSync(path.join(root, e.name), "utf8").length}`]
    )
    : []

const snapshot = () => ({
  links: execFileSync("ip", ["-n", node, "-o", "link"], { encoding: "utf8" }).split("\n").map((l) => l.split(":")[1]?.trim()).sort(),
  files: files(d.stateDir).sort()
})

const anything = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.double(),
  fc.string(),
  fc.constantFrom("", "a".repeat(5000), "__proto__", "../../etc"),
  fc.array(fc.oneof(fc.constant(null), fc.string(), fc.integer()), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.string(), { maxKeys: 3 })
)
const badId = fc.oneof(anything.filter((v) => typeof v !== "string" || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(v)), fc.constant("a".repeat(129)))

const network = {
  NetworkID: hex64("f1"),
  Options: { "com.docker.network.generic": {} },
  IPv4Data: [{ AddressSpace: "containerscale-local", Pool: "10.236.1.0/24", Gateway: "10.236.1.1/24" }]
}

/** Per method: a valid body and the known-bad values of its keys (each sample changes one key). */
const cases: ReadonlyArray<readonly [string, Record<string, unknown>, Record<string, fc.Arbitrary<unknown>>]> = [
  ["NetworkDriver.CreateNetwork", network, {
    NetworkID: badId,
    // null is Go's nil map: no options, which is valid
    Options: anything.filter((v) => v !== null && (typeof v !== "object" || Array.isArray(v))),
    IPv4Data: fc.oneof(fc.constant([null]), fc.constant([]), fc.constant([{ Pool: "banana", Gateway: "x" }]), fc.constant([{ Pool: "0.0.0.0/0" }]), fc.string()),
    IPv6Data: fc.constant([{ Pool: "fd00::/64" }])
  }],
  ["NetworkDriver.CreateNetwork", { ...network, Options: { "com.docker.network.generic": { "containerscale.mode": "member" } } }, {
    Options: fc.oneof(
      ...Object.entries({
        bogus: anything,
        mtu: fc.constantFrom("20", "x", "99999", "1.5", ""),
        timeout: fc.constantFrom("0", "601", "never", ""),
        userspace: fc.constantFrom("yes", "1", ""),
        tags: fc.constantFrom("tag:a b", "tag:é", ","),
        "login-server": fc.constantFrom("ftp://x", "not a url", ""),
        "auth-key-file": fc.constantFrom("relative", "/nonexistent/key", ""),
        "auth-key-env": fc.constantFrom("1BAD", "NOT_SET", "")
      }).map(([k, bad]) => bad.map((v) => ({ "com.docker.network.generic": { "containerscale.mode": "member", [`containerscale.${k}`]: v } })))
    )
  }],
  ["NetworkDriver.CreateEndpoint", { NetworkID: hex64("f2"), EndpointID: hex64("e1"), Interface: { Address: "10.236.1.2/24" } }, {
    NetworkID: badId,
    EndpointID: badId,
    Interface: anything.filter((v) => typeof v !== "object" || v === null || Array.isArray(v))
  }],
  ["NetworkDriver.Join", { NetworkID: hex64("f2"), EndpointID: hex64("e1"), SandboxKey: "/x" }, { NetworkID: badId, EndpointID: badId, SandboxKey: anything }],
  ["NetworkDriver.DeleteEndpoint", { NetworkID: hex64("f2"), EndpointID: hex64("e1") }, { EndpointID: badId }],
  ["IpamDriver.RequestPool", { AddressSpace: "containerscale-local", Pool: "10.236.2.0/24" }, {
    Pool: fc.oneof(fc.constantFrom("banana", "10.0.0.0/33", "999.1.1.1/8", "10.236.2.1/24", "fd00::/64", "10.0.0.0/31"), anything.filter((v) => typeof v !== "string")),
    SubPool: fc.constantFrom("10.99.0.0/24", "x")
  }],
  ["IpamDriver.RequestPool", { AddressSpace: "containerscale-local" }, { V6: fc.constant(true), SubPool: fc.constantFrom("10.236.3.0/24") }],
  ["IpamDriver.RequestAddress", { PoolID: "cs-unknown" }, { PoolID: anything, Options: anything.filter((v) => typeof v !== "object" || v === null || Array.isArray(v)) }],
  ["IpamDriver.ReleasePool", { PoolID: "cs-unknown" }, { PoolID: anything.filter((v) => v !== null && typeof v !== "string") }]
]

const sample = fc.constantFrom(...cases).chain(([method, body, keys]) =>
  fc.oneof(
    ...Object.entries(keys).map(([key, bad]) => bad.map((value) => ({ method, body: { ...body, [key]: value } as unknown }))),
    fc.oneof(fc.string(), fc.constantFrom("{", "[1", "nul")).filter((s) => {
      try {
        JSON.parse(s)
        return false
      } catch {
        return s.trim() !== ""
      }
    }).map((text) => ({ method, body: text as unknown }))
  )
)

describe("fuzzing the libnetwork edge", () => {
  it("every bad request gets the protocol's error and changes nothing", async () => {
    await fc.assert(
      fc.asyncProperty(sample, async ({ method, body }) => {
        const before = snapshot()
        const r = await d.call(method, body)
        const where = `${method} ${JSON.stringify(body).slice(0, 300)} -> ${r.status} ${r.raw.slice(0, 300)}`
        const key = method.startsWith("IpamDriver.") ? "Error" : "Err"
        if (r.status === 400) assert.isString(r.body?.[key], where)
        else {
          assert.strictEqual(r.status, 200, where)
          // ReleasePool of an unknown pool is idempotent: it answers {} and must change nothing
          if (!(method === "IpamDriver.ReleasePool" && Object.keys(r.body).length === 0)) assert.isString(r.body?.[key], where)
        }
        assert.notMatch(r.raw, /\\n\s+at /, where)
        assert.deepStrictEqual(snapshot(), before, where)
      }),
      { numRuns: 150, seed: SEED }
    )
  })
})

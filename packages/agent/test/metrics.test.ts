import {
  execPlugin,
  netnsPath,
  netnsScope,
  type PluginInvocation,
  processesWith,
  runConflist,
  startTestnet,
  type Testnet
} from "@containerscale/testing"
import { cniPath, distBin, testingBin } from "@containerscale/sandbox"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { cniConfigPools, makeEventsReader, startMetricsServer } from "../src/metrics/index.ts"
import { metricsOf } from "./services.ts"

/**
 * A known series of CNI calls through the real plugin binaries, in throwaway namespaces: router
 * mode, containerscale-ipam under the reference bridge, and member mode with the stand-in
 * tailscaled and the testnet control server. /metrics must show exactly those calls, once.
 */

const BIN = path.join(distBin(), "containerscale")
const TAILSCALED = path.join(testingBin(), "tailscaled")
const scope = netnsScope()
const node = scope.create("node")
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-metrics-"))
const stateDir = path.join(dir, "state")
const confDir = path.join(dir, "net.d")
const env = { CONTAINERSCALE_STATE_DIR: stateDir }
let testnet: Testnet
let key = ""

/** Our tailscaled processes (stand-ins started for this file's state dir). */
const daemons = () => processesWith(`--socket=${stateDir}`)

beforeAll(async () => {
  testnet = await startTestnet({ stateDir: path.join(dir, "testnet") })
  key = await testnet.createAuthKey({ reusable: true, ephemeral: true, tags: ["tag:ci"] })
})

afterAll(async () => {
  for (const pid of daemons()) process.kill(Number(pid), "SIGKILL")
  await testnet?.close()
  scope.dispose()
  fs.rmSync(dir, { recursive: true, force: true })
})

/** A sample's value in Prometheus text: the sum over series whose labels include `labels`. */
const sample = (text: string, name: string, labels: Record<string, string> = {}): number => {
  let sum = 0
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null || m[1] !== name) continue
    const have = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]))
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3])
  }
  return sum
}

const router = {
  cniVersion: "1.0.0",
  name: "rpods",
  type: "containerscale",
  mode: "router",
  ipam: { type: "containerscale-ipam", dataDir: path.join(dir, "ipam"), ranges: [[{ subnet: "10.239.0.0/24" }]] }
}

const bridged = {
  cniVersion: "1.0.0",
  name: "bridged",
  plugins: [{
    type: "bridge", bridge: `${node.slice(0, 9)}b1`, isGateway: true, ipMasq: false,
    ipam: { type: "containerscale-ipam", dataDir: path.join(dir, "ipam"), ranges: [[{ subnet: "10.239.1.0/24" }]] }
  }]
}

const members = () => ({
  cniVersion: "1.0.0",
  name: "members",
  plugins: [
    {
      type: "bridge", bridge: `${node.slice(0, 9)}b2`, isGateway: true, ipMasq: false,
      ipam: { type: "host-local", dataDir: path.join(dir, "host-local"), ranges: [[{ subnet: "10.239.2.0/24" }]] }
    },
    { type: "containerscale", loginServer: testnet.loginServer, tailscaledPath: TAILSCALED, stateDir, timeoutSeconds: 10 }
  ]
})

const call = (command: PluginInvocation["command"], containerId: string, ctr: string, config: object) =>
  execPlugin(BIN, { command, containerId, netns: netnsPath(ctr), ifname: "eth0", path: cniPath(), runIn: node, env }, config)

const chain = (containerId: string, ctr: string, extraEnv: Record<string, string> = {}) => ({
  containerId,
  netns: netnsPath(ctr),
  ifname: "eth0",
  path: cniPath(),
  runIn: node,
  cacheDir: path.join(dir, "cache"),
  env: { ...env, ...extraEnv }
})

describe("metrics from the plugin binaries", () => {
  it("/metrics counts a known series of calls exactly once, also across an agent restart", async () => {
    // the agent makes events/ (which turns recording on) and knows the CNI configs, for the pools
    const metrics = metricsOf({ pools: cniConfigPools({ dirs: [confDir], refreshMs: 0 }) })
    const reader = makeEventsReader({ stateDir, metrics })
    reader.init()
    fs.mkdirSync(confDir, { recursive: true })
    fs.writeFileSync(path.join(confDir, "10-rpods.conflist"), JSON.stringify({ cniVersion: "1.0.0", name: "rpods", plugins: [router] }))
    fs.writeFileSync(path.join(confDir, "20-bridged.conflist"), JSON.stringify(bridged))

    // router mode: 3 ADDs, 1 DEL, 1 ADD with a bad config
    const ctrs = ["r1", "r2", "r3"].map((n) => scope.create(n))
    for (const [i, ctr] of ctrs.entries()) {
      const add = await call("ADD", `r${i + 1}`, ctr, router)
      assert.strictEqual(add.exitCode, 0, add.stdout + add.stderr)
    }
    const del = await call("DEL", "r1", ctrs[0]!, router)
    assert.strictEqual(del.exitCode, 0, del.stdout)
    const bad = await call("ADD", "r4", scope.create("r4"), { ...router, mtu: 5 })
    assert.strictEqual((bad.json as any).code, 7)

    // containerscale-ipam under the reference bridge: 2 ADDs, 2 DELs
    const bctrs = ["b1", "b2"].map((n) => scope.create(n))
    for (const [i, ctr] of bctrs.entries()) {
      const add = await runConflist(bridged, "ADD", chain(`b${i + 1}`, ctr))
      assert.isTrue(add.ok, JSON.stringify(add.error))
    }
    for (const [i, ctr] of bctrs.entries()) {
      const out = await runConflist(bridged, "DEL", chain(`b${i + 1}`, ctr))
      assert.isTrue(out.ok, JSON.stringify(out.error))
    }

    // member mode: 1 ADD, 1 DEL
    const m = scope.create("m1")
    const madd = await runConflist(members(), "ADD", chain("m1", m, { CONTAINERSCALE_AUTH_KEY: key }))
    assert.isTrue(madd.ok, JSON.stringify(madd.error))
    const mdel = await runConflist(members(), "DEL", chain("m1", m, { CONTAINERSCALE_AUTH_KEY: key }))
    assert.isTrue(mdel.ok, JSON.stringify(mdel.error))
    assert.deepStrictEqual(daemons(), [])

    // what the agent itself counts
    metrics.setTailnetNodes(() => ({ running: 1, stopped: 0 }))
    metrics.tailscaledRestarts.inc()
    metrics.tailscaledRestarts.inc()
    metrics.reconcile.inc({ result: "ok" })

    const server = await startMetricsServer({ address: "127.0.0.1:0", registry: metrics.registry, beforeScrape: () => reader.poll() })
    let text: string
    try {
      text = await (await fetch(`${server.url}/metrics`)).text()
    } finally {
      await server.close()
    }
    const ops = (labels: Record<string, string>) => sample(text, "containerscale_cni_operations_total", labels)
    assert.strictEqual(ops({ plugin: "containerscale", command: "ADD", mode: "router", result: "ok" }), 3)
    assert.strictEqual(ops({ plugin: "containerscale", command: "DEL", mode: "router", result: "ok" }), 1)
    assert.strictEqual(ops({ plugin: "containerscale", command: "ADD", mode: "router", result: "error" }), 1)
    assert.strictEqual(ops({ plugin: "containerscale-ipam", command: "ADD", mode: "ipam", result: "ok" }), 2)
    assert.strictEqual(ops({ plugin: "containerscale-ipam", command: "DEL", mode: "ipam", result: "ok" }), 2)
    assert.strictEqual(ops({ plugin: "containerscale", command: "ADD", mode: "member", result: "ok" }), 1)
    assert.strictEqual(ops({ plugin: "containerscale", command: "DEL", mode: "member", result: "ok" }), 1)
    assert.strictEqual(ops({}), 11)
    assert.strictEqual(sample(text, "containerscale_cni_errors_total", { plugin: "containerscale", code: "7", type: "InvalidNetworkConfig" }), 1)
    assert.strictEqual(sample(text, "containerscale_cni_errors_total"), 1)
    assert.strictEqual(sample(text, "containerscale_cni_setup_duration_seconds_count", { mode: "router" }), 3)
    assert.strictEqual(sample(text, "containerscale_cni_setup_duration_seconds_count", { mode: "member" }), 1)
    assert.strictEqual(sample(text, "containerscale_cni_setup_duration_seconds_count", { mode: "ipam" }), 2)
    assert.isAbove(sample(text, "containerscale_cni_setup_duration_seconds_sum", { mode: "router" }), 0.003)
    assert.strictEqual(sample(text, "containerscale_ipam_allocations_total", { network: "rpods" }), 3)
    assert.strictEqual(sample(text, "containerscale_ipam_releases_total", { network: "rpods" }), 1)
    assert.strictEqual(sample(text, "containerscale_ipam_allocations_total", { network: "bridged" }), 2)
    assert.strictEqual(sample(text, "containerscale_ipam_releases_total", { network: "bridged" }), 2)
    assert.strictEqual(sample(text, "containerscale_ipam_pool_used_addresses", { network: "rpods", family: "ipv4" }), 2)
    assert.strictEqual(sample(text, "containerscale_ipam_pool_size_addresses", { network: "rpods", family: "ipv4" }), 253)
    assert.closeTo(sample(text, "containerscale_ipam_pool_utilization_ratio", { network: "rpods", family: "ipv4" }), 2 / 253, 1e-9)
    assert.notInclude(text, `network="rpods",family="ipv6"`, "an IPv4-only pool has no IPv6 series")
    assert.include(text, `containerscale_ipam_pool_used_addresses{network="bridged",family="ipv4"} 0`)
    assert.strictEqual(sample(text, "containerscale_tailnet_nodes", { state: "running" }), 1)
    assert.strictEqual(sample(text, "containerscale_tailscaled_restarts_total"), 2)
    assert.strictEqual(sample(text, "containerscale_agent_reconcile_total", { result: "ok" }), 1)
    assert.strictEqual(sample(text, "containerscale_events_invalid_total"), 0)
    assert.match(text, /^containerscale_build_info\{version="\d+\.\d+\.\d+[^"]*",runtime="node v\d+[^"]*"\} 1$/m)
    assert.isAbove(sample(text, "process_resident_memory_bytes"), 0)
    assert.isAbove(sample(text, "process_cpu_seconds_total"), 0)
    // no secret and no address ever reaches the journal
    const journal = fs.readFileSync(path.join(stateDir, "events", "events.jsonl"), "utf8")
    assert.notInclude(journal, key)
    assert.notInclude(journal, "10.239.")
    assert.notInclude(journal, testnet.loginServer)

    // a restarted agent: new registry, same offset file
    const again = metricsOf({ pools: cniConfigPools({ dirs: [confDir], refreshMs: 0 }) })
    const reader2 = makeEventsReader({ stateDir, metrics: again })
    assert.deepStrictEqual(reader2.poll(), { events: 0, invalid: 0, rotated: false })
    const del2 = await call("DEL", "r2", ctrs[1]!, router)
    assert.strictEqual(del2.exitCode, 0, del2.stdout)
    assert.strictEqual(reader2.poll().events, 1)
    const after = await again.registry.metrics()
    assert.strictEqual(sample(after, "containerscale_cni_operations_total"), 1)
    assert.strictEqual(sample(after, "containerscale_cni_operations_total", { command: "DEL", mode: "router", result: "ok" }), 1)
    assert.strictEqual(sample(after, "containerscale_ipam_releases_total", { network: "rpods" }), 1)
    assert.strictEqual(sample(after, "containerscale_ipam_pool_used_addresses", { network: "rpods" }), 1) // the stores were remembered
    assert.strictEqual(sample(after, "containerscale_ipam_pool_used_addresses", { network: "bridged" }), 0)
    await call("DEL", "r3", ctrs[2]!, router)
  })
})

import { EVENTS_FILE, type PluginEvent, recordEvent, ROTATED_EVENTS_FILE } from "@containerscale/core"
import { execPlugin } from "@containerscale/testing"
import { distBin } from "@containerscale/sandbox"
import { afterAll, assert, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { makeEventsReader, startMetricsServer } from "../src/metrics/index.ts"
import { metricsOf } from "./services.ts"

/**
 * The event journal between the real plugin binaries and the agent's reader: where it is written
 * (and where not), concurrent writers, rotation, torn lines, restarts, and the HTTP endpoint.
 */

const IPAM = path.join(distBin(), "containerscale-ipam")
const CS = path.join(distBin(), "containerscale")
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-metrics-journal-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

let n = 0
const fresh = (events = true) => {
  const stateDir = path.join(dir, `s${++n}`)
  fs.mkdirSync(events ? path.join(stateDir, "events") : stateDir, { recursive: true })
  return stateDir
}

const ipamConf = (stateDir: string, network = "jnl", extra: Record<string, unknown> = {}) => ({
  cniVersion: "1.0.0",
  name: network,
  type: "containerscale-ipam",
  ipam: { type: "containerscale-ipam", dataDir: path.join(stateDir, "ipam"), ranges: [[{ subnet: "10.238.0.0/24" }]] },
  ...extra
})

const ipam = (stateDir: string, command: "ADD" | "DEL", containerId: string, config: object = ipamConf(stateDir)) =>
  execPlugin(IPAM, { command, containerId, netns: "/proc/self/ns/net", ifname: "eth0", env: { CONTAINERSCALE_STATE_DIR: stateDir } }, config)

const lines = (stateDir: string, file = EVENTS_FILE): Array<PluginEvent> => {
  const f = path.join(stateDir, "events", file)
  return fs.existsSync(f) ? fs.readFileSync(f, "utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l)) : []
}

/** A sample's value in Prometheus text: the sum over series whose labels include `labels`. */
const sample = (text: string, name: string, labels: Record<string, string> = {}): number => {
  let sum = 0
  let seen = false
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null || m[1] !== name) continue
    const have = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]))
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) {
      sum += Number(m[3])
      seen = true
    }
  }
  return seen ? sum : 0
}

const event = (i: number): PluginEvent => ({
  t: Date.now(),
  plugin: "containerscale",
  command: "ADD",
  mode: "router",
  network: "rot",
  result: "ok",
  ms: 40 + i,
  dataDir: "/nonexistent/ipam",
  allocated: 1
})

describe("the event journal", () => {
  it("records nothing when events/ does not exist, and creates nothing", async () => {
    const stateDir = fresh(false)
    const version = await execPlugin(CS, { command: "VERSION", env: { CONTAINERSCALE_STATE_DIR: stateDir } }, "")
    assert.strictEqual(version.exitCode, 0)
    const add = await ipam(stateDir, "ADD", "none1")
    assert.strictEqual(add.exitCode, 0, add.stdout)
    assert.deepStrictEqual(fs.readdirSync(stateDir).sort(), ["ipam"])
  })

  it("writes to the config's stateDir before CONTAINERSCALE_STATE_DIR, and only names, never other config values", async () => {
    const [fromEnv, fromConfig] = [fresh(), fresh()]
    const config = ipamConf(fromEnv, "where", { stateDir: fromConfig, secretish: "do-not-copy-me" })
    const add = await ipam(fromEnv, "ADD", "w1", config)
    assert.strictEqual(add.exitCode, 0, add.stdout)
    assert.deepStrictEqual(lines(fromEnv), [])
    const [e] = lines(fromConfig)
    assert.deepInclude(e, { plugin: "containerscale-ipam", command: "ADD", mode: "ipam", network: "where", result: "ok", allocated: 1 })
    assert.strictEqual(e!.dataDir, path.join(fromEnv, "ipam"))
    assert.notInclude(fs.readFileSync(path.join(fromConfig, "events", EVENTS_FILE), "utf8"), "do-not-copy-me")
    assert.notInclude(JSON.stringify(e), "10.238")
  })

  it("20 concurrent plugin processes write exactly 20 whole lines, and count exactly 20 addresses", async () => {
    const stateDir = fresh()
    const outcomes = await Promise.all(Array.from({ length: 20 }, (_, i) => ipam(stateDir, "ADD", `c${i}`)))
    assert.deepStrictEqual(outcomes.map((o) => o.exitCode), Array(20).fill(0), outcomes.map((o) => o.stdout).join(""))
    const raw = fs.readFileSync(path.join(stateDir, "events", EVENTS_FILE), "utf8")
    assert.strictEqual(raw.split("\n").length, 21) // 20 lines and the empty rest after the last newline
    const events = lines(stateDir)
    assert.strictEqual(events.length, 20)
    assert.strictEqual(events.reduce((s, e) => s + (e.allocated ?? 0), 0), 20)
    const metrics = metricsOf()
    const polled = makeEventsReader({ stateDir, metrics }).poll()
    assert.deepStrictEqual(polled, { events: 20, invalid: 0, rotated: false })
    const text = await metrics.registry.metrics()
    assert.strictEqual(sample(text, "containerscale_cni_operations_total", { plugin: "containerscale-ipam", command: "ADD", result: "ok" }), 20)
    assert.strictEqual(sample(text, "containerscale_ipam_allocations_total", { network: "jnl" }), 20)
    // the same ADD again hands out nothing new
    const again = await ipam(stateDir, "ADD", "c0")
    assert.strictEqual(again.exitCode, 0)
    assert.isUndefined(lines(stateDir).at(-1)!.allocated)
  })

  it("a failed call records its code and error type", async () => {
    const stateDir = fresh()
    const bad = await ipam(stateDir, "ADD", "b1", { cniVersion: "1.0.0", name: "jnl", type: "containerscale-ipam" })
    assert.strictEqual((bad.json as any).code, 7)
    const noCommand = await execPlugin(CS, { command: "" as never, env: { CONTAINERSCALE_STATE_DIR: stateDir } }, "{}")
    assert.strictEqual((noCommand.json as any).code, 4)
    const [a, b] = lines(stateDir)
    assert.deepInclude(a, { plugin: "containerscale-ipam", command: "ADD", result: "error", code: 7, error: "InvalidNetworkConfig" })
    assert.deepInclude(b, { plugin: "containerscale", command: "unknown", mode: "router", result: "error", code: 4, error: "InvalidEnvironment" })
  })

  it("restarting the reader counts nothing twice and picks up what came meanwhile", async () => {
    const stateDir = fresh()
    for (const id of ["r1", "r2"]) assert.strictEqual((await ipam(stateDir, "ADD", id)).exitCode, 0)
    const first = metricsOf()
    assert.strictEqual(makeEventsReader({ stateDir, metrics: first }).poll().events, 2)
    assert.strictEqual((await ipam(stateDir, "DEL", "r1")).exitCode, 0)
    const second = metricsOf() // a restarted agent: new registry, same offset file
    const reader = makeEventsReader({ stateDir, metrics: second })
    assert.strictEqual(reader.poll().events, 1)
    assert.strictEqual(reader.poll().events, 0)
    const text = await second.registry.metrics()
    assert.strictEqual(sample(text, "containerscale_cni_operations_total", { command: "ADD" }), 0)
    assert.strictEqual(sample(text, "containerscale_cni_operations_total", { command: "DEL", result: "ok" }), 1)
    assert.strictEqual(sample(text, "containerscale_ipam_releases_total", { network: "jnl" }), 1)
    assert.deepStrictEqual(second.stores(), [{ network: "jnl", dataDir: path.join(stateDir, "ipam") }])
  })

  it("rotation loses nothing, also a line written through a descriptor opened before the rename", () => {
    const stateDir = fresh()
    const metrics = metricsOf()
    const reader = makeEventsReader({ stateDir, metrics, rotateBytes: 2000 })
    const journal = path.join(stateDir, "events", EVENTS_FILE)
    let written = 0
    let counted = 0
    let rotations = 0
    for (let round = 0; round < 6; round++) {
      for (let i = 0; i < 9; i++) assert.isTrue(recordEvent(stateDir, event(written++)))
      // a plugin that opened the journal just before the agent renames it
      const late = fs.openSync(journal, fs.constants.O_WRONLY | fs.constants.O_APPEND)
      const polled = reader.poll()
      counted += polled.events
      if (polled.rotated) rotations++
      fs.writeSync(late, JSON.stringify(event(written++)) + "\n")
      fs.closeSync(late)
    }
    counted += reader.poll().events
    assert.isAtLeast(rotations, 2)
    assert.isTrue(fs.existsSync(path.join(stateDir, "events", ROTATED_EVENTS_FILE)))
    assert.strictEqual(counted, written)
    // and a restarted reader finds nothing new in either file
    assert.strictEqual(makeEventsReader({ stateDir, metrics: metricsOf(), rotateBytes: 2000 }).poll().events, 0)
  })

  it("reads whole lines only, and keeps the event glued to a torn line", () => {
    const stateDir = fresh()
    const metrics = metricsOf()
    const reader = makeEventsReader({ stateDir, metrics })
    const journal = path.join(stateDir, "events", EVENTS_FILE)
    const line = JSON.stringify(event(1)) + "\n"
    fs.appendFileSync(journal, line.slice(0, 30)) // a write still landing
    assert.deepStrictEqual(reader.poll(), { events: 0, invalid: 0, rotated: false })
    fs.appendFileSync(journal, line.slice(30))
    assert.deepStrictEqual(reader.poll(), { events: 1, invalid: 0, rotated: false })
    fs.appendFileSync(journal, line.slice(0, 25)) // a writer that died mid-line
    recordEvent(stateDir, event(2))
    fs.appendFileSync(journal, "not json\n")
    assert.deepStrictEqual(reader.poll(), { events: 1, invalid: 2, rotated: false })
  })
})

describe("the metrics server", () => {
  it("serves /metrics, and /healthz with 200 or 503 and the failing checks", async () => {
    const stateDir = fresh()
    const metrics = metricsOf()
    const reader = makeEventsReader({ stateDir, metrics })
    let healthy = true
    const server = await startMetricsServer({
      address: "127.0.0.1:0",
      registry: metrics.registry,
      beforeScrape: () => reader.poll(),
      health: () => ({
        ok: healthy,
        checks: { tailscaled: { ok: true, detail: "running" }, events: { ok: healthy, detail: healthy ? "read" : "journal unreadable" } }
      })
    })
    try {
      assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/)
      recordEvent(stateDir, event(1))
      const res = await fetch(`${server.url}/metrics`)
      assert.strictEqual(res.status, 200)
      assert.include(res.headers.get("content-type"), "text/plain")
      const text = await res.text()
      assert.strictEqual(sample(text, "containerscale_cni_operations_total", { plugin: "containerscale", mode: "router" }), 1)
      assert.strictEqual(sample(text, "containerscale_cni_setup_duration_seconds_count", { mode: "router" }), 1)
      const ok = await fetch(`${server.url}/healthz`)
      assert.strictEqual(ok.status, 200)
      assert.deepStrictEqual(await ok.json(), {
        ok: true,
        checks: { tailscaled: { ok: true, detail: "running" }, events: { ok: true, detail: "read" } }
      })
      healthy = false
      const bad = await fetch(`${server.url}/healthz`)
      assert.strictEqual(bad.status, 503)
      assert.deepStrictEqual(await bad.json(), { ok: false, checks: { events: { ok: false, detail: "journal unreadable" } } })
      assert.strictEqual((await fetch(`${server.url}/nothing`)).status, 404)
      assert.strictEqual((await fetch(`${server.url}/metrics`, { method: "POST" })).status, 405)
    } finally {
      await server.close()
    }
  })

  it("listens on the address it is given, IPv6 included", async () => {
    const server = await startMetricsServer({ address: "[::1]:0", registry: metricsOf().registry })
    try {
      assert.match(server.address, /^\[::1\]:\d+$/)
      assert.strictEqual((await fetch(`${server.url}/healthz`)).status, 200)
    } finally {
      await server.close()
    }
  })
})

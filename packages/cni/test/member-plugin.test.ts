import {
  execPlugin,
  netnsPath,
  netnsScope,
  processesWith,
  runConflist,
  startTestnet,
  type Testnet
} from "@containerscale/testing"
import { cniPath, distBin, testingBin } from "@containerscale/sandbox"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { execFile, execFileSync } from "node:child_process"
import { promisify } from "node:util"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

/**
 * The `containerscale` binary in member mode, chained after the reference bridge, with the
 * stand-in tailscaled and the testnet control server; run inside a throwaway node namespace.
 */

const execFileAsync = promisify(execFile)
const BIN = path.join(distBin(), "containerscale")
const TAILSCALED = path.join(testingBin(), "tailscaled")
const scope = netnsScope()
const node = scope.create("node")
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-member-"))
const stateDir = path.join(dir, "state")
const members = path.join(stateDir, "member")
let testnet: Testnet
let key = ""
const seenKeys: Array<string> = []

/** Every process whose command line holds a key we handed out: there must never be one. */
const keysOnCommandLines = () => {
  const hits: Array<string> = []
  for (const pid of fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    let cmdline = ""
    try {
      cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8")
    } catch {
      continue
    }
    if (seenKeys.some((k) => cmdline.includes(k))) hits.push(`${pid}: ${cmdline.replaceAll("\0", " ")}`)
  }
  return hits
}
let cmdlineWatch: NodeJS.Timeout | undefined
const cmdlineHits: Array<string> = []

/** Our tailscaled processes (stand-ins started for this file's state dir). */
const daemons = () => processesWith(`--socket=${stateDir}`)

beforeAll(async () => {
  testnet = await startTestnet({ stateDir: path.join(dir, "testnet") })
  key = await testnet.createAuthKey({ reusable: true, ephemeral: true, tags: ["tag:ci"] })
  seenKeys.push(key)
  cmdlineWatch = setInterval(() => cmdlineHits.push(...keysOnCommandLines()), 20)
})

afterAll(async () => {
  clearInterval(cmdlineWatch)
  for (const pid of daemons()) process.kill(Number(pid), "SIGKILL")
  await testnet?.close()
  scope.dispose()
  fs.rmSync(dir, { recursive: true, force: true })
})

const bridge = `${node.slice(0, 9)}br`

const memberPluginConfig = (extra: Record<string, unknown> = {}) => ({
  type: "containerscale",
  loginServer: testnet.loginServer,
  tailscaledPath: TAILSCALED,
  stateDir,
  timeoutSeconds: 10,
  ...extra
})

const list = (extra: Record<string, unknown> = {}) => ({
  cniVersion: "1.0.0",
  name: "members",
  plugins: [
    {
      type: "bridge", bridge, isGateway: true, ipMasq: false,
      ipam: { type: "host-local", dataDir: path.join(dir, "host-local"), ranges: [[{ subnet: "10.236.20.0/24" }]] }
    },
    memberPluginConfig(extra)
  ]
})

const options = (containerId: string, ctr: string, args: Record<string, string> = {}, env: Record<string, string> = {}) => ({
  containerId,
  netns: netnsPath(ctr),
  ifname: "eth0",
  path: cniPath(),
  runIn: node,
  cacheDir: path.join(dir, "cache"),
  args: { IgnoreUnknown: "1", ...args },
  env: { CONTAINERSCALE_AUTH_KEY: key, ...env }
})

/** Async: the testnet relay runs in this process, so a synchronous exec would stall the packets. */
const ping = (from: string, to: string) => execFileAsync("ip", ["netns", "exec", from, "busybox", "ping", "-c", "1", "-W", "3", to])

describe("containerscale member mode", () => {
  it("two containers become tailnet nodes, reach each other by tailnet address, and leave the tailnet on DEL", async () => {
    const [a, b] = [scope.create("a"), scope.create("b")]
    const ra = await runConflist(list(), "ADD", options("ma", a, { K8S_POD_NAME: "web" }))
    const rb = await runConflist(list(), "ADD", options("mb", b, { K8S_POD_NAME: "db" }))
    assert.isTrue(ra.ok && rb.ok, JSON.stringify([ra.error, rb.error]))
    const result = ra.result as any
    const tun = result.interfaces.at(-1)
    assert.strictEqual(tun.name, "tailscale0")
    assert.strictEqual(tun.sandbox, netnsPath(a))
    assert.match(tun.mac, /^02:00(:[0-9a-f]{2}){4}$/)
    const tailnetIps = result.ips.filter((ip: any) => ip.interface === result.interfaces.length - 1).map((ip: any) => ip.address)
    assert.strictEqual(tailnetIps.length, 2)
    assert.match(tailnetIps[0], /^100\.\d+\.\d+\.\d+\/32$/)
    assert.match(tailnetIps[1], /^fd7a:115c:a1e0:.*\/128$/)
    assert.strictEqual(result.dns.nameservers[0], "100.100.100.100")
    // the bridge's part of the result is passed on
    assert.deepStrictEqual(result.ips[0], (ra.calls[0]!.outcome.json as any).ips[0])

    const nodes = testnet.nodes()
    assert.deepStrictEqual(nodes.map((n) => n.givenName).sort(), ["db", "web"])
    assert.isTrue(nodes.every((n) => n.online && n.tags.includes("tag:ci")))
    const ipOf = (r: any) => r.ips.find((ip: any) => ip.address.startsWith("100."))!.address.split("/")[0]
    await ping(a, ipOf(rb.result))
    await ping(b, ipOf(ra.result))

    const check = await runConflist({ ...list(), plugins: list().plugins.slice(1) }, "CHECK", { ...options("ma", a), prevResult: result })
    assert.isTrue(check.ok, JSON.stringify(check.error))

    for (const [id, ns] of [["ma", a], ["mb", b]] as const) {
      const del = await runConflist(list(), "DEL", options(id, ns))
      assert.isTrue(del.ok, JSON.stringify(del.error))
    }
    assert.deepStrictEqual(testnet.nodes(), []) // ephemeral nodes are deleted at logout
    assert.deepStrictEqual(daemons(), [])
    assert.deepStrictEqual(fs.readdirSync(members), [])
    const again = await runConflist(list(), "DEL", options("ma", a))
    assert.isTrue(again.ok, JSON.stringify(again.error))
  })

  it("keeps a persistent identity: the same workload comes back as the same node", async () => {
    const ctr = scope.create("same")
    const persistentKey = await testnet.createAuthKey({ reusable: true })
    seenKeys.push(persistentKey)
    const opts = options("p1", ctr, { K8S_POD_NAMESPACE: "shop", K8S_POD_NAME: "cart" }, { CONTAINERSCALE_AUTH_KEY: persistentKey })
    const first = await runConflist(list({ ephemeral: false }), "ADD", opts)
    assert.isTrue(first.ok, JSON.stringify(first.error))
    const node1 = testnet.nodes().find((n) => n.givenName === "cart")!
    assert.isDefined(node1)
    assert.isTrue((await runConflist(list({ ephemeral: false }), "DEL", opts)).ok)
    assert.deepStrictEqual(daemons(), [])
    const second = await runConflist(list({ ephemeral: false }), "ADD", { ...opts, containerId: "p2" })
    assert.isTrue(second.ok, JSON.stringify(second.error))
    const node2 = testnet.nodes().find((n) => n.givenName === "cart")!
    assert.strictEqual(node2.id, node1.id)
    assert.deepStrictEqual(node2.addresses, node1.addresses)
    assert.strictEqual(testnet.nodes().filter((n) => n.name === "cart").length, 1)
    assert.isTrue((await runConflist(list({ ephemeral: false }), "DEL", { ...opts, containerId: "p2" })).ok)
  })

  it("GC stops the tailscaled of every attachment that is not valid", async () => {
    const [keep, drop] = [scope.create("gkeep"), scope.create("gdrop")]
    assert.isTrue((await runConflist(list(), "ADD", options("gkeep", keep))).ok)
    assert.isTrue((await runConflist(list(), "ADD", options("gdrop", drop))).ok)
    assert.strictEqual(daemons().length, 2)
    const gc = await execPlugin(
      BIN,
      { command: "GC", path: cniPath(), runIn: node, env: { CONTAINERSCALE_AUTH_KEY: key } },
      { cniVersion: "1.1.0", name: "members", ...memberPluginConfig(), "cni.dev/valid-attachments": [{ containerID: "gkeep", ifname: "eth0" }] }
    )
    assert.strictEqual(gc.exitCode, 0, gc.stdout)
    assert.strictEqual(daemons().length, 1)
    assert.deepStrictEqual(testnet.nodes().filter((n) => n.ephemeral).map((n) => n.givenName), ["gkeep"])
    assert.isTrue((await runConflist(list(), "DEL", options("gkeep", keep))).ok)
    assert.isTrue((await runConflist(list(), "DEL", options("gdrop", drop))).ok)
  })

  it("bad keys, an unreachable control server and a missing tailscaled give clear errors and leave nothing", async () => {
    const expired = await testnet.createAuthKey({ expiresInMs: -60_000 })
    seenKeys.push(expired)
    const cases: ReadonlyArray<{ what: string; extra?: Record<string, unknown>; env?: Record<string, string>; code: number; says: string }> = [
      { what: "no key", env: { CONTAINERSCALE_AUTH_KEY: "" }, code: 7, says: "no auth key" },
      { what: "malformed key", env: { CONTAINERSCALE_AUTH_KEY: "hskey auth" }, code: 7, says: "white space" },
      { what: "key file missing", env: { CONTAINERSCALE_AUTH_KEY: "", CONTAINERSCALE_AUTH_KEY_FILE: "/nonexistent/key" }, code: 7, says: "/nonexistent/key" },
      { what: "rejected key", env: { CONTAINERSCALE_AUTH_KEY: expired }, code: 107, says: "refused" },
      { what: "unreachable control server", extra: { loginServer: `unix:${dir}/nothing.sock`, timeoutSeconds: 3 }, code: 107, says: "could it reach the login server" },
      { what: "tailscaled missing", extra: { tailscaledPath: "/nonexistent/tailscaled" }, code: 107, says: "tailscaled" },
      { what: "flag we set ourselves", extra: { tailscaledFlags: ["--socket=/tmp/x.sock"] }, code: 7, says: "--socket" },
      { what: "the same in Go's one-dash form", extra: { tailscaledFlags: ["-statedir", "/tmp/x"] }, code: 7, says: "-statedir" },
      { what: "a tailscaled config file", extra: { tailscaledFlags: ["--config=/etc/ts.json"] }, code: 7, says: "can turn on Tailscale SSH" },
      { what: "Tailscale SSH", extra: { tailscaleFlags: ["--ssh"] }, code: 7, says: "Tailscale SSH is refused in member mode" },
      { what: "unknown tailscale flag", extra: { tailscaleFlags: ["--exit-node=1.2.3.4"] }, code: 7, says: "--exit-node" }
    ]
    const folders = () => (fs.existsSync(members) ? fs.readdirSync(members).sort() : [])
    const before = folders() // the persistent identity of the test above stays
    for (const c of cases) {
      const ctr = scope.create("bad")
      const out = await runConflist(list(c.extra), "ADD", options("bad", ctr, {}, c.env))
      assert.isFalse(out.ok, c.what)
      const error = out.error as { code: number; msg: string }
      assert.strictEqual(error.code, c.code, `${c.what}: ${JSON.stringify(error)}`)
      assert.include(error.msg, c.says, c.what)
      for (const k of seenKeys) assert.notInclude(JSON.stringify(out), k, c.what)
      await runConflist(list(c.extra), "DEL", options("bad", ctr, {}, c.env))
      assert.deepStrictEqual(daemons(), [], c.what)
      assert.deepStrictEqual(folders(), before, c.what)
      assert.deepStrictEqual(testnet.nodes().filter((n) => n.online), [], c.what)
      execFileSync("ip", ["netns", "delete", ctr])
    }
  })

  it("STATUS is ready with the stand-in and says what is missing otherwise", async () => {
    const status = (extra: Record<string, unknown>) =>
      execPlugin(BIN, { command: "STATUS", runIn: node }, { cniVersion: "1.1.0", name: "members", ...memberPluginConfig(extra) })
    const ready = await status({})
    assert.strictEqual(ready.exitCode, 0, ready.stdout)
    const missing = await status({ tailscaledPath: "/nonexistent/tailscaled" })
    assert.strictEqual((missing.json as any).code, 50)
    assert.include((missing.json as any).msg, "/nonexistent/tailscaled")
  })

  it("no command line, log or result ever held an auth key", () => {
    assert.deepStrictEqual(cmdlineHits, [])
    const logs = fs.existsSync(stateDir) ? fs.readdirSync(stateDir, { recursive: true }) as Array<string> : []
    for (const f of logs.filter((f) => f.endsWith(".log"))) {
      const text = fs.readFileSync(path.join(stateDir, f), "utf8")
      for (const k of seenKeys) assert.notInclude(text, k)
    }
  })
})

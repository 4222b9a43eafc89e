import { memberPaths } from "@containerscale/core/member"
import { listLinks, netnsPath, netnsScope, processesWith, startTestnet, type Testnet } from "@containerscale/testing"
import { testingBin } from "@containerscale/sandbox"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { execFile, execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { call, network, runPlugin } from "./helpers.ts"

/**
 * Member mode, by hand, with the stand-in tailscaled and the testnet control server (in this
 * process: every exec here is async so the relay keeps moving packets).
 */

const execFileAsync = promisify(execFile)
const TAILSCALED = path.join(testingBin(), "tailscaled")
const scope = netnsScope()
const node = scope.create("node")
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-nv-member-"))
const stateDir = path.join(dir, "state")
const members = path.join(stateDir, "member")
let testnet: Testnet
let key = ""

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

const memberNet = (extra: Record<string, string> = {}) =>
  network({
    mode: "member",
    login_server: testnet.loginServer,
    tailscaled_path: TAILSCALED,
    state_dir: stateDir,
    timeout: "15",
    tags: "tag:ci",
    ...extra
  }, "10.237.3.0/24", "10.237.3.1")

const run = (args: Array<string>, input: object, env: Record<string, string> = { CONTAINERSCALE_AUTH_KEY: key }) =>
  runPlugin(args, input, { node, env })
const ping = (from: string, to: string) => execFileAsync("ip", ["netns", "exec", from, "busybox", "ping", "-c", "1", "-W", "3", to])
const tailnetIp = (status: any) => status.interfaces.tailscale0.subnets[0].ipnet.split("/")[0]

describe("containerscale-netavark member mode", () => {
  it("two containers join the tailnet during setup, reach each other by tailnet address, and leave on teardown", async () => {
    const [a, b] = [scope.create("a"), scope.create("b")]
    const ca = call("ma", "web", memberNet(), ["10.237.3.5"])
    const cb = call("mb", null, memberNet(), ["10.237.3.6"])
    const [sa, sb] = await Promise.all([run(["setup", netnsPath(a)], ca), run(["setup", netnsPath(b)], cb)])
    assert.strictEqual(sa.exitCode, 0, sa.stdout + sa.stderr)
    assert.strictEqual(sb.exitCode, 0, sb.stdout + sb.stderr)
    assert.deepStrictEqual(Object.keys(sa.json.interfaces), ["eth0", "tailscale0"])
    assert.deepStrictEqual(sa.json.interfaces.eth0.subnets, [{ ipnet: "10.237.3.5/24", gateway: "10.237.3.1" }])
    const ts = sa.json.interfaces.tailscale0
    assert.match(ts.mac_address, /^02:00(:[0-9a-f]{2}){4}$/)
    assert.match(ts.subnets[0].ipnet, /^100\.\d+\.\d+\.\d+\/32$/)
    assert.match(ts.subnets[1].ipnet, /^fd7a:115c:a1e0:.*\/128$/)
    assert.deepStrictEqual(sa.json.dns_server_ips, ["100.100.100.100"])
    assert.strictEqual(sa.json.dns_search_domains.length, 1)

    // identity and hostname from the container name, else the container id
    const names = testnet.nodes().map((n) => n.givenName).sort()
    assert.deepStrictEqual(names, ["mb0000000000", "web"])
    assert.isTrue(testnet.nodes().every((n) => n.online && n.tags.includes("tag:ci")))
    const folderOf = (identity: string) => path.basename(memberPaths(members, identity).dir)
    assert.deepStrictEqual(fs.readdirSync(members).sort(), [folderOf(`csnet_${"mb".padEnd(64, "0")}`), folderOf("csnet_web")].sort())
    await ping(a, tailnetIp(sb.json))
    await ping(b, tailnetIp(sa.json))

    const ta = await run(["teardown", netnsPath(a)], ca, {})
    assert.strictEqual(ta.exitCode, 0, ta.stdout)
    assert.deepStrictEqual(testnet.nodes().map((n) => n.givenName), ["mb0000000000"])
    // the namespace is gone: the member leaves by its record
    execFileSync("ip", ["netns", "delete", b])
    const tb = await run(["teardown", netnsPath(b)], cb, {})
    assert.strictEqual(tb.exitCode, 0, tb.stdout)
    assert.deepStrictEqual(testnet.nodes(), [])
    assert.deepStrictEqual(daemons(), [])
    assert.deepStrictEqual(fs.readdirSync(members), [])
    assert.deepStrictEqual(listLinks(node, "cs"), [])
    const again = await run(["teardown", netnsPath(b)], cb, {})
    assert.strictEqual(again.exitCode, 0, again.stdout)
  })

  it("the key from auth_key_file; userspace networking", async () => {
    const c = scope.create("c")
    const keyFile = path.join(dir, "key")
    fs.writeFileSync(keyFile, `${key}\n`, { mode: 0o600 })
    const cc = call("mc", "files", memberNet({ auth_key_file: keyFile, userspace: "true", hostname: "svc-{name}" }), ["10.237.3.7"])
    const s = await run(["setup", netnsPath(c)], cc, {})
    assert.strictEqual(s.exitCode, 0, s.stdout + s.stderr)
    assert.deepStrictEqual(Object.keys(s.json.interfaces), ["eth0", "tailscale"])
    assert.deepStrictEqual(testnet.nodes().map((n) => n.givenName), ["svc-files"])
    assert.deepStrictEqual(listLinks(c, "tailscale"), [])
    assert.strictEqual((await run(["teardown", netnsPath(c)], cc, {})).exitCode, 0)
    assert.deepStrictEqual(testnet.nodes(), [])
  })

  it("a failed join undoes the wiring and the member folder", async () => {
    const d = scope.create("d")
    const expired = await testnet.createAuthKey({ expiresInMs: -60_000 })
    const cases: ReadonlyArray<{ net: object; env: Record<string, string>; says: string }> = [
      { net: memberNet(), env: { CONTAINERSCALE_AUTH_KEY: expired }, says: "refused" },
      { net: memberNet({ login_server: `unix:${dir}/nothing.sock`, timeout: "5" }), env: { CONTAINERSCALE_AUTH_KEY: key }, says: "" },
      { net: memberNet({ tailscaled_path: "/nonexistent/tailscaled" }), env: { CONTAINERSCALE_AUTH_KEY: key }, says: "" },
      { net: memberNet(), env: {}, says: "a new tailnet node needs an auth key" }
    ]
    for (const c of cases) {
      const o = await run(["setup", netnsPath(d)], call("md", "bad", c.net, ["10.237.3.8"]), c.env)
      assert.strictEqual(o.exitCode, 1, o.stdout)
      assert.deepStrictEqual(Object.keys(o.json), ["error"])
      assert.include(o.json.error, c.says)
      assert.deepStrictEqual(listLinks(node, "cs"), [])
      assert.deepStrictEqual(listLinks(d, "eth0"), [])
      assert.deepStrictEqual(fs.existsSync(members) ? fs.readdirSync(members) : [], [])
      assert.deepStrictEqual(daemons(), [])
    }
    assert.deepStrictEqual(testnet.nodes(), [])
  })
})

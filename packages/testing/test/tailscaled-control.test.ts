import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import {
  localApi,
  type RunningTailscaled,
  startTailscaled,
  watchIpnBus
} from "../src/tailscaled/harness.ts"
import { ensureTailscaledBinary, tailscaledBinary } from "../../sandbox/src/repo.ts"
import { startTestnet, type Testnet } from "../src/testnet/server.ts"

// The state machine against a real testnet control server, in userspace-networking mode (the
// TUN path is in tailscaled-tun.test.ts).

let dir: string
let testnet: Testnet
const daemons: Array<RunningTailscaled> = []
let counter = 0

beforeAll(async () => {
  ensureTailscaledBinary()
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-tailscaled-ctl-"))
  testnet = await startTestnet({ stateDir: path.join(dir, "testnet") })
}, 120_000)

afterEach(async () => {
  for (const d of daemons.splice(0)) await d.stop("SIGKILL")
})

afterAll(async () => {
  await testnet?.close()
  fs.rmSync(dir, { recursive: true, force: true })
})

interface Node {
  readonly daemon: RunningTailscaled
  readonly socket: string
  readonly stateFile: string
  readonly api: (route: string, request?: Parameters<typeof localApi>[2]) => ReturnType<typeof localApi>
}

const launch = async (name = `n${++counter}`, state?: string): Promise<Node> => {
  const socket = path.join(dir, name, "tailscaled.sock")
  const stateFile = state ?? path.join(dir, name, "tailscaled.state")
  const daemon = await startTailscaled({ binary: tailscaledBinary(), socket, state: stateFile })
  daemons.push(daemon)
  return { daemon, socket, stateFile, api: (route, request) => localApi(socket, route, request) }
}

const upPrefs = (hostname: string) => ({
  ControlURL: testnet.loginServer,
  WantRunning: true,
  Hostname: hostname,
  CorpDNS: false,
  NetfilterMode: 2,
  NoStatefulFiltering: true,
  AutoUpdate: { Check: true, Apply: null }
})

/** The bring-up sequence of tailscale-localapi.md section 5; returns the bus messages it saw. */
const up = async (node: Node, hostname: string, authKey: string) => {
  const bus = await watchIpnBus(node.socket, 2)
  try {
    expect((await node.api("start", { method: "POST", body: { AuthKey: authKey, UpdatePrefs: upPrefs(hostname) } })).status).toBe(204)
    expect((await node.api("login-interactive", { method: "POST" })).status).toBe(204)
    await bus.waitFor((m) => m.State === 6 || typeof m.ErrMessage === "string")
    return [...bus.messages]
  } finally {
    bus.close()
  }
}

const status = async (node: Node) => (await node.api("status")).json() as Record<string, any>

describe("with a testnet control server", () => {
  it("a good key: LoginFinished, Starting, Running, with addresses, DNS name and tailnet", async () => {
    const node = await launch()
    const messages = await up(node, "good-node", await testnet.createAuthKey())
    const states = messages.map((m) => m.State).filter((s) => s !== null)
    expect(states).toEqual([2, 5, 6])
    expect(messages.some((m) => m.LoginFinished !== null && typeof m.LoginFinished === "object")).toBe(true)
    expect(messages.every((m) => m.ErrMessage === null)).toBe(true)

    const st = await status(node)
    const registered = testnet.nodes().find((n) => n.nodeKey === st.Self.PublicKey)!
    expect(registered).toBeDefined()
    expect(st.BackendState).toBe("Running")
    expect(st.HaveNodeKey).toBe(true)
    expect(st.TailscaleIPs).toEqual(registered.addresses)
    expect(st.TailscaleIPs[0]).toMatch(/^100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\./)
    expect(st.TailscaleIPs[1]).toMatch(/^fd7a:115c:a1e0:/)
    expect(st.Self.ID).toBe(String(registered.id))
    expect(st.Self.NodeID).toBe(registered.id)
    expect(st.Self.PublicKey).toMatch(/^nodekey:[0-9a-f]{64}$/)
    expect(st.Self.DNSName).toBe(registered.dnsName)
    expect(st.Self.DNSName.endsWith(".")).toBe(true)
    expect(typeof st.Self.UserID).toBe("number")
    expect(st.CurrentTailnet).toEqual({ Name: expect.any(String), MagicDNSSuffix: "tailnet.containerscale.test", MagicDNSEnabled: true })
    expect(st.User[String(registered.userId)].LoginName).toBe(registered.userName)
    expect(st.Health).toEqual([])
    expect(st.TUN).toBe(false)

    // the relay connection makes it online
    await expect.poll(() => testnet.nodes().find((n) => n.id === registered.id)?.online, { timeout: 5000 }).toBe(true)
    const prefs = (await node.api("prefs")).json() as Record<string, any>
    expect(prefs.Config.NodeID).toBe(String(registered.id))
  })

  it("sees peers keyed by node key, and whois finds them", async () => {
    const a = await launch()
    const b = await launch()
    const key = await testnet.createAuthKey({ reusable: true })
    await up(a, "peer-a", key)
    await up(b, "peer-b", key)
    const sb = await status(b)
    await expect.poll(async () => Object.keys((await status(a)).Peer ?? {}), { timeout: 5000 }).toContain(sb.Self.PublicKey)
    const peer = (await status(a)).Peer[sb.Self.PublicKey]
    expect(peer.TailscaleIPs).toEqual(sb.TailscaleIPs)
    expect(peer.DNSName).toBe(sb.Self.DNSName)
    expect(peer.NodeID).toBe(sb.Self.NodeID)
    expect((await a.api("status?peers=false")).json()).toMatchObject({ Peer: null })

    const whois = await a.api(`whois?addr=${sb.TailscaleIPs[0]}:443`)
    expect(whois.status).toBe(200)
    expect(whois.json()).toMatchObject({ Node: { ID: sb.Self.NodeID, Key: sb.Self.PublicKey, Name: sb.Self.DNSName }, CapMap: null })
    expect((await a.api(`whois?addr=[${sb.TailscaleIPs[1]}]:80`)).status).toBe(200)
    expect((await a.api(`whois?addr=${sb.Self.PublicKey}`)).status).toBe(200)

    const ping = await a.api(`ping?ip=${sb.TailscaleIPs[0]}&type=TSMP`, { method: "POST" })
    expect(ping.status).toBe(200)
    expect((ping.json() as Record<string, unknown>).Err).toBe("")
  })

  it("a bad key: stays NeedsLogin, ErrMessage from the control server, a Health warning", async () => {
    const node = await launch()
    const messages = await up(node, "bad-node", "hskey-auth-nope-nope")
    const err = messages.find((m) => typeof m.ErrMessage === "string")!
    expect(err.ErrMessage).toBe("invalid pre auth key")
    expect(messages.some((m) => m.State === 5 || m.State === 6)).toBe(false)
    const st = await status(node)
    expect(st.BackendState).toBe("NeedsLogin")
    expect(st.Health).toEqual(["Tailscale is starting. Please wait.", "You are logged out. The last login error was: invalid pre auth key"])
    expect(st.TailscaleIPs).toBeNull()
    expect(st.CurrentTailnet).toBeNull()
    const health = await watchIpnBus(node.socket, 128)
    const first = await health.waitFor(() => true)
    health.close()
    expect(Object.keys((first.Health as { Warnings: object }).Warnings)).toEqual(["warming-up", "login-state"])
  })

  it("a used single-use key is refused", async () => {
    const key = await testnet.createAuthKey()
    await up(await launch(), "first-user", key)
    const messages = await up(await launch(), "second-user", key)
    expect(messages.find((m) => typeof m.ErrMessage === "string")?.ErrMessage).toBe("authkey already used")
  })

  it("PATCH WantRunning false gives Stopped, true gives Running again", async () => {
    const node = await launch()
    await up(node, "stopper", await testnet.createAuthKey())
    const bus = await watchIpnBus(node.socket, 0)
    try {
      await node.api("prefs", { method: "PATCH", body: { WantRunning: false, WantRunningSet: true } })
      expect((await status(node)).BackendState).toBe("Stopped")
      await bus.waitFor((m) => m.State === 4)
      await node.api("prefs", { method: "PATCH", body: { WantRunning: true, WantRunningSet: true } })
      await bus.waitFor((m) => m.State === 6)
    } finally {
      bus.close()
    }
  })

  it("logout: NeedsLogin, WantRunning false, LoggedOut true, addresses gone, node expired at control", async () => {
    const node = await launch()
    await up(node, "leaver", await testnet.createAuthKey())
    const before = await status(node)
    const bus = await watchIpnBus(node.socket, 0)
    expect((await node.api("logout", { method: "POST" })).status).toBe(204)
    await bus.waitFor((m) => m.State === 2)
    bus.close()
    const st = await status(node)
    expect(st.BackendState).toBe("NeedsLogin")
    expect(st.TailscaleIPs).toBeNull()
    expect(st).not.toHaveProperty("HaveNodeKey")
    expect((await node.api("prefs")).json()).toMatchObject({ WantRunning: false, LoggedOut: true, Config: null })
    const gone = testnet.nodes().find((n) => n.nodeKey === before.Self.PublicKey)
    expect(gone?.expired ?? true).toBe(true)
  })

  it("a restart with the state file keeps the node's identity without an auth key", async () => {
    const first = await launch("restart")
    const authKey = await testnet.createAuthKey()
    await up(first, "phoenix", authKey)
    const before = await status(first)
    expect(await first.daemon.stop("SIGTERM")).toBe(0)
    const saved = fs.readFileSync(first.stateFile, "utf8")
    expect(saved).not.toContain(authKey)
    expect(saved).toContain(before.Self.PublicKey)

    const second = await launch("restart")
    await expect.poll(async () => (await status(second)).BackendState, { timeout: 10_000 }).toBe("Running")
    const after = await status(second)
    expect(after.Self.ID).toBe(before.Self.ID)
    expect(after.Self.PublicKey).toBe(before.Self.PublicKey)
    expect(after.TailscaleIPs).toEqual(before.TailscaleIPs)
    expect(after.HaveNodeKey).toBe(true)
    const log = (await second.api("debug-requests")).json() as Array<unknown>
    expect(log.filter((r) => (r as { path: string }).path.endsWith("/start"))).toEqual([])
  })

  it("mem: state logs the node out on SIGTERM", async () => {
    const node = await launch("ephemeral", "mem:")
    await up(node, "fleeting", await testnet.createAuthKey({ ephemeral: true }))
    const key = (await status(node)).Self.PublicKey
    expect(testnet.nodes().some((n) => n.nodeKey === key)).toBe(true)
    expect(await node.daemon.stop("SIGTERM")).toBe(0)
    expect(testnet.nodes().some((n) => n.nodeKey === key)).toBe(false)
    expect(fs.existsSync(node.socket)).toBe(false)
  })

  it("a node removed at control drops back to NeedsLogin", async () => {
    const node = await launch()
    await up(node, "doomed", await testnet.createAuthKey())
    const id = (await status(node)).Self.ID
    const res = await fetch(`${testnet.apiUrl}/api/v1/node/${id}`, { method: "DELETE", headers: { authorization: `Bearer ${testnet.apiKey}` } })
    expect(res.status).toBe(200)
    await expect.poll(async () => (await status(node)).BackendState, { timeout: 5000 }).toBe("NeedsLogin")
  })
})

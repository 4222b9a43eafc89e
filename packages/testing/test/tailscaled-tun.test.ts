import { execFile } from "node:child_process"
import { promisify } from "node:util"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { interfaceAddresses, ipJson, netnsPath, type NetnsScope, netnsScope, uniquePrefix } from "../src/netns.ts"
import { localApi, type RunningTailscaled, startTailscaled, watchIpnBus } from "../src/tailscaled/harness.ts"
import { ensureTailscaledBinary, tailscaledBinary } from "../../sandbox/src/repo.ts"
import { startTestnet, type Testnet } from "../src/testnet/server.ts"

// End to end: two stand-in daemons in TUN mode, each in its own network namespace, joined
// through the testnet relay; busybox ping crosses from one namespace to the other.

let dir: string
let testnet: Testnet
let scope: NetnsScope
const daemons: Array<RunningTailscaled> = []

interface Member {
  readonly netns: string
  readonly socket: string
  readonly daemon: RunningTailscaled
  readonly ips: ReadonlyArray<string>
}
let a: Member
let b: Member

const join = async (suffix: string, authKey: string): Promise<Member> => {
  const netns = scope.create(suffix)
  const socket = path.join(dir, suffix, "tailscaled.sock")
  const daemon = await startTailscaled({ binary: tailscaledBinary(), socket, state: path.join(dir, suffix, "tailscaled.state"), tun: "tailscale0", netns })
  daemons.push(daemon)
  const bus = await watchIpnBus(socket, 2)
  try {
    await localApi(socket, "start", {
      method: "POST",
      body: { AuthKey: authKey, UpdatePrefs: { ControlURL: testnet.loginServer, WantRunning: true, Hostname: `tun-${suffix}`, NetfilterMode: 2 } }
    })
    await localApi(socket, "login-interactive", { method: "POST" })
    const done = await bus.waitFor((m) => m.State === 6 || typeof m.ErrMessage === "string")
    expect(done.ErrMessage, daemon.logs()).toBeNull()
  } finally {
    bus.close()
  }
  const status = (await localApi(socket, "status")).json() as { TailscaleIPs: Array<string> }
  return { netns, socket, daemon, ips: status.TailscaleIPs }
}

// Asynchronous on purpose: the testnet relay runs in this process and must keep forwarding.
const pingFrom = async (netns: string, address: string, count = 2) =>
  (await promisify(execFile)("nsenter", [`--net=${netnsPath(netns)}`, "busybox", "ping", "-c", String(count), "-W", "3", address], { encoding: "utf8", timeout: 20_000 })).stdout

beforeAll(async () => {
  ensureTailscaledBinary()
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-tailscaled-tun-"))
  scope = netnsScope(`${uniquePrefix()}-`)
  testnet = await startTestnet({ stateDir: path.join(dir, "testnet") })
  const key = await testnet.createAuthKey({ reusable: true })
  a = await join("a", key)
  b = await join("b", key)
}, 120_000)

afterAll(async () => {
  for (const d of daemons) await d.stop("SIGTERM", 5000).catch(() => undefined)
  await testnet?.close()
  scope?.dispose()
  if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true })
})

describe("TUN mode", () => {
  it("configures tailscale0: MTU 1280, up, the node's /32 and /128, routes for the tailnet ranges", async () => {
    const [link] = ipJson<Array<{ mtu: number; flags: Array<string> }>>(a.netns, ["link", "show", "tailscale0"])
    expect(link!.mtu).toBe(1280)
    expect(link!.flags).toContain("UP")
    expect(interfaceAddresses(a.netns, "tailscale0", "inet")).toEqual([`${a.ips[0]}/32`])
    expect(interfaceAddresses(a.netns, "tailscale0", "inet6")).toContain(`${a.ips[1]}/128`)
    const v4 = ipJson<Array<{ dst: string; dev: string }>>(a.netns, ["-4", "route", "show", "dev", "tailscale0"]).map((r) => r.dst)
    expect(v4).toContain("100.64.0.0/10")
    const v6 = ipJson<Array<{ dst: string }>>(a.netns, ["-6", "route", "show", "dev", "tailscale0"]).map((r) => r.dst)
    expect(v6).toContain("fd7a:115c:a1e0::/48")
    const status = (await localApi(a.socket, "status")).json() as { TUN: boolean }
    expect(status.TUN).toBe(true)
  })

  it("pings the other namespace's IPv4 tailnet address through the relay, both ways", async () => {
    expect(await pingFrom(a.netns, b.ips[0]!)).toMatch(/2 packets received/)
    expect(await pingFrom(b.netns, a.ips[0]!)).toMatch(/2 packets received/)
  })

  it("pings the IPv6 fd7a address too", async () => {
    expect(await pingFrom(a.netns, b.ips[1]!)).toMatch(/2 packets received/)
    expect(await pingFrom(b.netns, a.ips[1]!)).toMatch(/2 packets received/)
  })

  it("answers MagicDNS names on quad-100 (100.100.100.100 and fd7a:115c:a1e0::53)", async () => {
    const nslookup = async (args: Array<string>) =>
      (await promisify(execFile)("nsenter", [`--net=${netnsPath(a.netns)}`, "busybox", "nslookup", ...args], { encoding: "utf8", timeout: 20_000 })).stdout
    const name = "tun-b.tailnet.containerscale.test"
    expect(await nslookup([name, "100.100.100.100"])).toContain(b.ips[0])
    expect(await nslookup(["-type=AAAA", name, "fd7a:115c:a1e0::53"])).toContain(b.ips[1])
    const failure = await nslookup(["nobody.tailnet.containerscale.test", "100.100.100.100"]).catch((e: { stdout?: string; stderr?: string }) => `${e.stdout}${e.stderr}`)
    expect(failure).toContain("NXDOMAIN")
  })

  it("counts relayed packets in metrics", async () => {
    const metrics = (await localApi(a.socket, "metrics")).body
    const outbound = Number(/tailscaled_outbound_packets_total (\d+)/.exec(metrics)?.[1])
    expect(outbound).toBeGreaterThanOrEqual(4)
  })

  it("Stopped removes the addresses; Running puts them back", async () => {
    await localApi(b.socket, "prefs", { method: "PATCH", body: { WantRunning: false, WantRunningSet: true } })
    expect(interfaceAddresses(b.netns, "tailscale0", "inet")).toEqual([])
    await expect(pingFrom(a.netns, b.ips[0]!, 1)).rejects.toThrow()
    const bus = await watchIpnBus(b.socket, 0)
    await localApi(b.socket, "prefs", { method: "PATCH", body: { WantRunning: true, WantRunningSet: true } })
    await bus.waitFor((m) => m.State === 6)
    bus.close()
    expect(interfaceAddresses(b.netns, "tailscale0", "inet")).toEqual([`${b.ips[0]}/32`])
    expect(await pingFrom(a.netns, b.ips[0]!)).toMatch(/2 packets received/)
  })

  it("SIGTERM takes tailscale0 away with the process", async () => {
    expect(await b.daemon.stop("SIGTERM")).toBe(0)
    expect(ipJson(b.netns, ["link", "show"]).map((l) => l.ifname)).not.toContain("tailscale0")
  })
})

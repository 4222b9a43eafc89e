import {
  execPlugin,
  listLinks,
  netnsPath,
  netnsScope,
  processesWith,
  startTestnet,
  type Testnet,
  waitUntil
} from "@containerscale/testing"
import { distBin } from "@containerscale/sandbox"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Layer, Redacted, Result } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { ensureTailscaledBinary } from "../../sandbox/src/repo.ts"
import { gcNode, netnsGone } from "../src/gc.ts"
import { Ipam } from "../src/ipam/Ipam.ts"
import { layerIproute2 } from "../src/netlink/iproute2.ts"
import { LocalApi } from "../src/tailscale/LocalApi.ts"
import { resolvePool } from "../src/pool.ts"
import { hostInterfaceAlias, hostInterfaceName } from "../src/router/attach.ts"
import { memberRoot } from "../src/state.ts"
import { joinMember, leaveMember, listMembers, memberPaths } from "../src/tailscale/tailscaled.ts"

/**
 * Node GC against real namespaces: router-mode attachments made by the real `containerscale`
 * binary inside a throwaway namespace standing for the node, and member-mode nodes brought up
 * with the stand-in tailscaled and the testnet control server (in this process).
 */

const BIN = path.join(distBin(), "containerscale")
const scope = netnsScope()
const node = scope.create("node")
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-gc-"))
const dataDir = path.join(dir, "ipam")
const stateDir = path.join(dir, "state")
const NETWORK = "gcpods"
const SUBNET = "10.237.0.0/24"
const pool = Result.getOrThrow(resolvePool({ ranges: [[{ subnet: SUBNET }]] }))
const services = Layer.mergeAll(layerIproute2, Ipam.layer(), LocalApi.layer)
let testnet: Testnet | undefined

/** Our stand-in daemons (their sockets are under this file's state dir). */
const daemons = () => processesWith(`--socket=${stateDir}`)

beforeAll(() => {
  ensureTailscaledBinary()
})

afterAll(async () => {
  for (const pid of daemons()) process.kill(Number(pid), "SIGKILL")
  await testnet?.close()
  scope.dispose()
  fs.rmSync(dir, { recursive: true, force: true })
})

const conf = {
  cniVersion: "1.0.0",
  name: NETWORK,
  type: "containerscale",
  mode: "router",
  ipam: { type: "containerscale-ipam", dataDir, ranges: [[{ subnet: SUBNET }]] }
}

const add = async (containerId: string, ctr: string) => {
  const out = await execPlugin(BIN, { command: "ADD", containerId, netns: netnsPath(ctr), ifname: "eth0", runIn: node }, conf)
  assert.strictEqual(out.exitCode, 0, out.stdout + out.stderr)
  return (out.json as any).ips[0].address.split("/")[0] as string
}

const allocations = () =>
  Effect.runPromise(Ipam.make().usage({ network: NETWORK, dataDir, pool })).then((u) => u.flatMap((s) => s.allocations))

const gc = (options: { dryRun?: boolean; graceMs?: number } = {}) =>
  Effect.runPromise(
    gcNode({ stateDir, networks: [{ name: NETWORK, dataDir, pool }], nodeNetns: netnsPath(node), graceMs: 50, ...options }).pipe(
      Effect.provide(services)
    )
  )

/** A member on the stand-in tailscaled (userspace) in namespace `ns`, as a CNI ADD would start it. */
const joinStandIn = (key: Redacted.Redacted<string>, identity: string, ns: string, persistent: boolean) =>
  Effect.runPromise(joinMember({
    stateDir: memberRoot(stateDir),
    network: "tailnet",
    containerId: `c-${identity}`,
    ifname: "eth0",
    netns: netnsPath(ns),
    identity,
    persistent,
    tailscaled: path.join(path.dirname(distBin()), "testing-bin", "tailscaled"),
    userspace: true,
    prefs: { hostname: identity, loginServer: testnet!.loginServer },
    authKey: key,
    timeout: "20 seconds"
  }).pipe(Effect.provide(LocalApi.layer)))

describe("gcNode", () => {
  it("router mode: releases the address of a container whose namespace is gone and keeps the other", async () => {
    const [gone, kept] = [scope.create("gone"), scope.create("kept")]
    const goneIp = await add("gone", gone)
    const keptIp = await add("kept", kept)
    assert.sameMembers(listLinks(node, "cs"), [hostInterfaceName("gone", "eth0"), hostInterfaceName("kept", "eth0")])

    const idle = await gc()
    assert.deepStrictEqual(idle, { dryRun: false, addresses: [], links: [], members: [], errors: [] })

    execFileSync("ip", ["netns", "delete", gone]) // the container dies without DEL
    // the kernel tears a namespace down after `ip netns delete` returns, later under load
    await waitUntil("the dead container's veth pair gone", () =>
      listLinks(node, "cs").length === 1 ? true : undefined, 10_000)
    assert.deepStrictEqual(listLinks(node, "cs"), [hostInterfaceName("kept", "eth0")])

    const dry = await gc({ dryRun: true })
    assert.isTrue(dry.dryRun)
    assert.deepStrictEqual(dry.addresses, [
      { network: NETWORK, containerId: "gone", ifname: "eth0", hostInterface: hostInterfaceName("gone", "eth0"), ips: [goneIp] }
    ])
    assert.strictEqual((await allocations()).length, 2, "a dry run changes nothing")

    const report = await gc()
    assert.deepStrictEqual(report.addresses.map((a) => [a.containerId, a.ips]), [["gone", [goneIp]]])
    assert.deepStrictEqual(report.errors, [])
    assert.deepStrictEqual((await allocations()).map((a) => [a.containerId, a.ip]), [["kept", keptIp]])
    assert.deepStrictEqual(listLinks(node, "cs"), [hostInterfaceName("kept", "eth0")])

    const again = await gc()
    assert.deepStrictEqual(again.addresses, [])

    const del = await execPlugin(BIN, { command: "DEL", containerId: "kept", netns: netnsPath(kept), ifname: "eth0", runIn: node }, conf)
    assert.strictEqual(del.exitCode, 0, del.stdout)
    assert.deepStrictEqual(await allocations(), [])
  })

  it("router mode: a link that appears within the grace period keeps its address (an ADD in flight)", async () => {
    // an allocation with no link yet, as between ADD's allocation and its veth
    await Effect.runPromise(Ipam.make().allocate({ network: NETWORK, dataDir, pool, containerId: "inflight", ifname: "eth0" }))
    const host = hostInterfaceName("inflight", "eth0")
    const pending = gc({ graceMs: 1500 })
    await new Promise((r) => setTimeout(r, 300))
    execFileSync("ip", ["-n", node, "tuntap", "add", "dev", host, "mode", "tun"])
    const report = await pending
    assert.deepStrictEqual(report.addresses, [])
    assert.strictEqual((await allocations()).length, 1)
    execFileSync("ip", ["-n", node, "link", "delete", host])
    const after = await gc()
    assert.deepStrictEqual(after.addresses.map((a) => a.containerId), ["inflight"])
    assert.deepStrictEqual(await allocations(), [])
  })

  it("router mode: removes a host link with our alias whose veth peer is gone, and no other link", async () => {
    const ctr = scope.create("peer")
    await add("peer", ctr)
    const orphan = hostInterfaceName("orphan", "eth0")
    execFileSync("ip", ["-n", node, "tuntap", "add", "dev", orphan, "mode", "tun"]) // no veth peer
    execFileSync("ip", ["-n", node, "link", "set", orphan, "alias", hostInterfaceAlias(NETWORK, "orphan", "eth0")])
    execFileSync("ip", ["-n", node, "tuntap", "add", "dev", "csforeign0", "mode", "tun"]) // no alias: not ours
    const dry = await gc({ dryRun: true })
    assert.deepStrictEqual(dry.links.map((l) => l.name), [orphan])
    assert.include(listLinks(node, "cs"), orphan)
    const report = await gc()
    assert.deepStrictEqual(report.links.map((l) => [l.name, l.network, l.containerId]), [[orphan, NETWORK, "orphan"]])
    assert.sameMembers(listLinks(node, "cs"), [hostInterfaceName("peer", "eth0"), "csforeign0"])
    execFileSync("ip", ["-n", node, "link", "delete", "csforeign0"])
    await execPlugin(BIN, { command: "DEL", containerId: "peer", netns: netnsPath(ctr), ifname: "eth0", runIn: node }, conf)
  })

  it("netnsGone: a live namespace, a missing path, and a file left without its mount", () => {
    const ns = scope.create("probe")
    assert.isFalse(netnsGone(netnsPath(ns)))
    assert.isFalse(netnsGone("/proc/self/ns/net"))
    assert.isTrue(netnsGone(path.join(dir, "no-such-netns")))
    const plain = path.join(dir, "plain-file")
    fs.writeFileSync(plain, "")
    assert.isTrue(netnsGone(plain))
  })

  it("member mode: a node whose container namespace is gone leaves the tailnet; a persistent one keeps its state", async () => {
    testnet = await startTestnet({ stateDir: path.join(dir, "testnet") })
    const key = Redacted.make(await testnet.createAuthKey({ reusable: true, ephemeral: false }))
    const root = memberRoot(stateDir)
    const join = (identity: string, ns: string, persistent: boolean) => joinStandIn(key, identity, ns, persistent)
    const [a, b, c] = [scope.create("ma"), scope.create("mb"), scope.create("mc")]
    const ephemeral = await join("eph", a, false)
    const persistent = await join("keep", b, true)
    const alive = await join("alive", c, false)
    assert.strictEqual(listMembers(root).filter((m) => m.running).length, 3)

    execFileSync("ip", ["netns", "delete", a])
    execFileSync("ip", ["netns", "delete", b])
    const dry = await gc({ dryRun: true })
    assert.sameMembers(dry.members.map((m) => m.identity), ["eph", "keep"])
    assert.strictEqual(listMembers(root).filter((m) => m.running).length, 3, "a dry run changes nothing")

    const report = await gc()
    assert.deepStrictEqual(report.errors, [])
    assert.sameDeepMembers(report.members.map((m) => ({ identity: m.identity, keptState: m.keptState, wasRunning: m.wasRunning })), [
      { identity: "eph", keptState: false, wasRunning: true },
      { identity: "keep", keptState: true, wasRunning: true }
    ])
    for (const pid of [ephemeral.pid, persistent.pid]) assert.isFalse(fs.existsSync(`/proc/${pid}/cmdline`) && isRunning(pid), `pid ${pid} stopped`)
    assert.isFalse(fs.existsSync(memberPaths(root, "eph").dir))
    assert.isTrue(fs.existsSync(memberPaths(root, "keep").state), "the persistent identity keeps its state")
    const left = listMembers(root)
    assert.deepStrictEqual(left.filter((m) => m.running).map((m) => m.identity), ["alive"])
    assert.isTrue(isRunning(alive.pid))

    // a second pass has nothing to do: the kept identity's daemon is already stopped
    const again = await gc()
    assert.deepStrictEqual(again.members, [])
    const ephNode = testnet.nodes().find((n) => n.givenName === "eph")
    assert.isTrue(ephNode === undefined || ephNode.expired || !ephNode.online, "the ephemeral-state node logged out")

    await Effect.runPromise(leaveMember({ stateDir: root, identity: "alive", keepState: false }).pipe(Effect.provide(LocalApi.layer)))
  })

  it("member mode: a tailscaled whose pid was never written (its ADD was killed) is found by its socket and stopped", async () => {
    testnet ??= await startTestnet({ stateDir: path.join(dir, "testnet") })
    const key = Redacted.make(await testnet.createAuthKey({ reusable: true, ephemeral: true }))
    const root = memberRoot(stateDir)
    const join = (identity: string, ns: string) => joinStandIn(key, identity, ns, false)
    /** What a plugin killed between starting tailscaled and writing its pid leaves: the record without a pid. */
    const forgetPid = (identity: string) => {
      const paths = memberPaths(root, identity)
      const { pid: _, ...record } = JSON.parse(fs.readFileSync(paths.record, "utf8"))
      fs.writeFileSync(paths.record, JSON.stringify(record))
      fs.rmSync(paths.pid)
    }
    const [a, b] = [scope.create("oa"), scope.create("ob")]
    const byGc = await join("orphan-gc", a)
    const byDel = await join("orphan-del", b)
    forgetPid("orphan-gc")
    forgetPid("orphan-del")
    const orphans = () => listMembers(root).filter((m) => m.identity.startsWith("orphan")).map((m) => [m.identity, m.running]).sort()
    assert.deepStrictEqual(orphans(), [["orphan-del", true], ["orphan-gc", true]])

    execFileSync("ip", ["netns", "delete", a])
    const report = await gc()
    assert.deepStrictEqual(report.errors, [])
    assert.deepStrictEqual(report.members.map((m) => [m.identity, m.wasRunning]), [["orphan-gc", true]])
    assert.isFalse(isRunning(byGc.pid), "gcNode stopped the daemon")
    assert.isFalse(fs.existsSync(memberPaths(root, "orphan-gc").dir))

    // DEL (the Member's leave, found by the record)
    const leave = await Effect.runPromise(leaveMember({ stateDir: root, identity: "orphan-del", keepState: false }).pipe(Effect.provide(LocalApi.layer)))
    assert.isUndefined(leave)
    assert.isFalse(isRunning(byDel.pid), "leave stopped the daemon")
    assert.isFalse(fs.existsSync(memberPaths(root, "orphan-del").dir))
    assert.deepStrictEqual(daemons(), [])
    assert.deepStrictEqual(testnet.nodes().filter((n) => n.online && n.givenName.startsWith("orphan")), [])
  })
})

const isRunning = (pid: number) => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    return !stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")
  } catch {
    return false
  }
}

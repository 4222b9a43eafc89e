import * as Log from "@containerscale/core/log"
import { type RealNode, type RealTailnet, startRealTailnet, type TailnetHost } from "@containerscale/sandbox"
import { distBin, execPlugin, netnsPath, waitUntil } from "@containerscale/testing"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { execFile, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { runAgent } from "../src/agent.ts"
import { collectStatus } from "../src/cli/status.ts"
import type { AgentConfig } from "../src/config.ts"
import { approverAt, forkWith, runWith } from "./services.ts"

/**
 * The cluster network over a real tailnet: nodes that share no route to each other's pod CIDRs,
 * each a host namespace with its own real tailscaled (TUN, netfilter on) logged into real
 * Headscale 0.29, its own agent (own state directory) and its own dual-stack pod CIDR, pods
 * attached by the `containerscale` CNI plugin in router mode. Pods reach each other only through
 * the tailnet, with their own source addresses.
 */

const execFileAsync = promisify(execFile)
const TEST_TIMEOUT = 300_000

interface ClusterNode {
  readonly index: number
  readonly host: TailnetHost
  ts: RealNode
  readonly stateDir: string
  readonly cidrs: readonly [string, string]
  agent?: { readonly log: Log.MemoryLog; readonly fiber: Fiber.Fiber<unknown, unknown> } | undefined
}

interface Pod {
  readonly name: string
  readonly node: ClusterNode
  readonly netns: string
  readonly v4: string
  readonly v6: string
}

const eventually = <A>(what: string, f: () => Promise<A>, timeoutMs = 120_000): Promise<A> =>
  waitUntil(what, async () => ({ value: await f() }), timeoutMs).then((r) => r.value)

const cidrsOf = (i: number) => [`10.244.${i}.0/24`, `fd10:244:0:${i}::/64`] as const

/** A TCP server in a pod that answers each connection with the peer's address and the bytes it got. */
const SERVER = `
const net = require("node:net")
net.createServer((s) => {
  let bytes = 0
  s.on("data", (d) => { bytes += d.length })
  s.on("end", () => s.end(s.remoteAddress.replace(/^::ffff:/, "") + " " + bytes))
  s.on("error", () => {})
}).listen(Number(process.argv[1]), "::", () => process.stdout.write("listening\\n"))
`
/** Sends `bytes` to a pod's server and prints its answer. */
const CLIENT = `
const net = require("node:net")
const [host, port, bytes] = process.argv.slice(1)
const s = net.connect({ host, port: Number(port) }, () => s.end(Buffer.alloc(Number(bytes), 120)))
let answer = ""
s.on("data", (d) => { answer += d })
s.on("end", () => { process.stdout.write(answer); process.exit(0) })
s.on("error", (e) => { process.stderr.write(e.message); process.exit(1) })
setTimeout(() => { process.stderr.write("timed out"); process.exit(2) }, 20000)
`
const PORT = 7070

describe("the cluster network over the real tailnet", { timeout: TEST_TIMEOUT }, () => {
  let dir = ""
  let tailnet: RealTailnet
  let key = ""
  let apiKey = ""
  const nodes: Array<ClusterNode> = []
  const pods: Array<Pod> = []
  const servers: Array<ReturnType<typeof spawn>> = []

  const agentConfig = (n: ClusterNode): AgentConfig => ({
    stateDir: n.stateDir,
    metricsAddress: "127.0.0.1:0",
    cniConfDir: path.join(dir, "net.d"),
    logLevel: "debug",
    logFile: undefined,
    podCidrs: n.cidrs,
    serviceCidrs: [],
    nodePrefs: "manage",
    kubernetesNode: undefined,
    tailscaledSocket: n.ts.socket,
    routerIntervalSeconds: 2,
    headscale: undefined,
    superviseSeconds: 3600,
    gcSeconds: 3600
  })

  const startAgent = (n: ClusterNode) => {
    const log = Log.memory()
    const fiber = forkWith(runAgent({
      config: agentConfig(n),
      env: {},
      state: { checks: new Map() },
      approver: approverAt(tailnet.apiUrl, apiKey),
      nodeNetns: netnsPath(n.host.netns)
    }), log)
    n.agent = { log, fiber }
    return log
  }
  const stopAgent = async (n: ClusterNode) => {
    if (n.agent !== undefined) await Effect.runPromise(Fiber.interrupt(n.agent.fiber))
    n.agent = undefined
  }
  /** Waits for a pass of `n`'s agent after the `after`-th that found its pod CIDRs served. */
  const served = (n: ClusterNode, after = 0) =>
    eventually(`node ${n.index}'s agent serving its pod CIDRs`, async () => {
      const lines = n.agent!.log.lines.filter((l) => l.msg === "router reconciled").slice(after)
      if (!lines.some((l) => l.ok === true)) throw new Error(JSON.stringify(n.agent!.log.lines.slice(-3)))
    })
  const passes = (n: ClusterNode) => n.agent!.log.lines.filter((l) => l.msg === "router reconciled").length

  const addNode = async (index: number) => {
    const host = tailnet.addHost(`n${index}`)
    const ts = await tailnet.startNode(`n${index}`, { host, authKey: key, netfilter: true })
    const n: ClusterNode = { index, host, ts, stateDir: path.join(dir, `state-${index}`), cidrs: cidrsOf(index) }
    nodes.push(n)
    return n
  }

  const addPod = async (n: ClusterNode, name: string): Promise<Pod> => {
    const netns = tailnet.scope.create(name)
    const add = await execPlugin(
      path.join(distBin(), "containerscale"),
      { command: "ADD", containerId: name, netns: netnsPath(netns), ifname: "eth0", runIn: n.host.netns },
      {
        cniVersion: "1.0.0",
        name: "pods",
        type: "containerscale",
        mode: "router",
        ipam: { type: "containerscale-ipam", dataDir: path.join(n.stateDir, "ipam"), ranges: [[{ subnet: n.cidrs[0] }], [{ subnet: n.cidrs[1] }]] }
      }
    )
    assert.strictEqual(add.exitCode, 0, `${add.stdout}${add.stderr}`)
    const ips = (add.json as { ips: Array<{ address: string }> }).ips.map((ip) => ip.address.split("/")[0]!)
    const pod = { name, node: n, netns, v4: ips.find((ip) => !ip.includes(":"))!, v6: ips.find((ip) => ip.includes(":"))! }
    const server = spawn("ip", ["netns", "exec", netns, process.execPath, "-e", SERVER, String(PORT)], { stdio: ["ignore", "pipe", "inherit"] })
    servers.push(server)
    await new Promise<void>((resolve) => server.stdout!.once("data", () => resolve()))
    pods.push(pod)
    return pod
  }

  const removePod = async (pod: Pod) => {
    const del = await execPlugin(
      path.join(distBin(), "containerscale"),
      { command: "DEL", containerId: pod.name, netns: netnsPath(pod.netns), ifname: "eth0", runIn: pod.node.host.netns },
      {
        cniVersion: "1.0.0",
        name: "pods",
        type: "containerscale",
        mode: "router",
        ipam: { type: "containerscale-ipam", dataDir: path.join(pod.node.stateDir, "ipam"), ranges: [[{ subnet: pod.node.cidrs[0] }], [{ subnet: pod.node.cidrs[1] }]] }
      }
    )
    assert.strictEqual(del.exitCode, 0, `${del.stdout}${del.stderr}`)
    pods.splice(pods.indexOf(pod), 1)
  }

  /** Sends `bytes` from `from` to `to`'s server; answers the source address `to` saw and the bytes it got. */
  const send = async (from: Pod, to: string, bytes = 1000) => {
    const { stdout } = await execFileAsync("ip", ["netns", "exec", from.netns, process.execPath, "-e", CLIENT, to, String(PORT), String(bytes)], {
      timeout: 30_000
    })
    const [source, got] = stdout.trim().split(" ")
    return { source: source!, bytes: Number(got) }
  }
  const reaches = (from: Pod, to: string) =>
    execFileAsync("ip", ["netns", "exec", from.netns, "busybox", "ping", ...(to.includes(":") ? ["-6"] : []), "-c", "1", "-W", "2", to], { timeout: 10_000 })
      .then(() => true, () => false)

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-cluster-real-"))
    fs.mkdirSync(path.join(dir, "net.d"))
    tailnet = await startRealTailnet()
    const user = await tailnet.createUser("cluster")
    key = (await tailnet.createAuthKey({ user, reusable: true, tags: ["tag:k8s-node"] })).key
    apiKey = await tailnet.createApiKey()
    for (const i of [1, 2, 3]) await addNode(i)
    for (const n of nodes) await addPod(n, `p${n.index}`)
  }, 900_000)

  afterAll(async () => {
    for (const n of nodes) await stopAgent(n)
    for (const s of servers) s.kill("SIGKILL")
    await tailnet?.close()
    if (dir !== "") fs.rmSync(dir, { recursive: true, force: true })
  }, 120_000)

  it("without the agents, pods on different nodes do not reach each other: the nodes share no route", async () => {
    const [p1, p2] = [pods[0]!, pods[1]!]
    assert.isFalse(await reaches(p1, p2.v4))
    assert.isFalse(await reaches(p2, p1.v6))
    const { stdout } = await execFileAsync("ip", ["-n", p1.node.host.netns, "route", "get", p2.v4])
    assert.notInclude(stdout, "tailscale0")
  })

  it("with an agent on each node, every pod reaches every other by its pod IP, IPv4 and IPv6, with its own source address", async () => {
    for (const n of nodes) startAgent(n)
    for (const n of nodes) await served(n)
    for (const n of nodes) {
      const prefs = JSON.parse(await n.ts.cli(["debug", "prefs"])) as { RouteAll: boolean; NoSNAT: boolean; AdvertiseRoutes: Array<string> }
      assert.deepStrictEqual([prefs.RouteAll, prefs.NoSNAT, [...prefs.AdvertiseRoutes].sort()], [true, true, [...n.cidrs].sort()])
    }
    for (const from of pods) {
      for (const to of pods.filter((p) => p.node !== from.node)) {
        for (const family of ["v4", "v6"] as const) {
          const answer = await eventually(`${from.name} -> ${to.name} over ${family}`, () => send(from, to[family]), 60_000)
          assert.deepStrictEqual(answer, { source: from[family], bytes: 1000 }, `${from.name} -> ${to.name} (${family})`)
        }
      }
    }
    const { stdout } = await execFileAsync("ip", ["-n", pods[0]!.node.host.netns, "route", "get", pods[1]!.v4])
    assert.include(stdout, "dev tailscale0")
  })

  it("a transfer of 8 MB crosses the tailnet whole: the pods' MTU fits the tailnet's", async () => {
    const [p1, p3] = [pods[0]!, pods[2]!]
    const mtu = (await execFileAsync("ip", ["-n", p1.netns, "-j", "link", "show", "eth0"])).stdout
    assert.strictEqual((JSON.parse(mtu) as Array<{ mtu: number }>)[0]!.mtu, 1280)
    assert.deepStrictEqual(await send(p1, p3.v4, 8 * 1024 * 1024), { source: p1.v4, bytes: 8 * 1024 * 1024 })
    assert.deepStrictEqual(await send(p3, p1.v6, 8 * 1024 * 1024), { source: p3.v6, bytes: 8 * 1024 * 1024 })
  })

  it("pods added and removed while traffic flows leave the others' traffic whole, and the new pods are reachable", async () => {
    const [p1, p2] = [pods[0]!, pods[1]!]
    const flow = execFileAsync("ip", ["netns", "exec", p1.netns, "busybox", "ping", "-c", "40", "-i", "0.1", "-W", "2", p2.v4], { timeout: 60_000 })
    const extra = await addPod(nodes[2]!, "p3b")
    const more = await addPod(nodes[1]!, "p2b")
    await removePod(extra)
    const { stdout } = await flow
    assert.match(stdout, /40 packets transmitted, 40 packets received/)
    assert.deepStrictEqual(await send(p1, more.v4), { source: p1.v4, bytes: 1000 })
    assert.deepStrictEqual(await send(more, p1.v6), { source: more.v6, bytes: 1000 })
  })

  it("the tailnet is the only path: with one node's tailscaled down its pods are cut off, and back when it is up", async () => {
    const [p1, p2] = [pods[0]!, pods[1]!]
    const n2 = nodes[1]!
    await n2.ts.cli(["down"])
    assert.isFalse(await reaches(p1, p2.v4))
    await n2.ts.cli(["up"], 60_000)
    await eventually("p1 reaching p2 after tailscale up", () => send(p1, p2.v4))
  })

  it("a restarted tailscaled and a restarted agent keep the node's pods reachable", async () => {
    const [p1, p2, p3] = [pods[0]!, pods[1]!, pods[2]!]
    const n2 = nodes[1]!
    const before = passes(n2)
    n2.ts = await n2.ts.restart()
    await served(n2, before)
    await eventually("p1 reaching p2 after its tailscaled restarted", () => send(p1, p2.v4))
    await eventually("p2 reaching p3 after its tailscaled restarted", () => send(p2, p3.v6))

    const n1 = nodes[0]!
    await stopAgent(n1)
    assert.deepStrictEqual(await send(p3, p1.v4), { source: p3.v4, bytes: 1000 }, "the routes outlive the agent")
    startAgent(n1)
    await served(n1)
    assert.deepStrictEqual(await send(p3, p1.v4), { source: p3.v4, bytes: 1000 })
  })

  it("a node removed: its routes are withdrawn, the others say why its pods are unreachable; a node added is reachable within a pass", async () => {
    const [p1, p3] = [pods[0]!, pods[2]!]
    const [n1, n3] = [nodes[0]!, nodes[2]!]
    await stopAgent(n3)
    const id = (await n3.ts.status()).Self.ID as string
    await n3.ts.stop()
    await tailnet.headscale(["nodes", "delete", "--identifier", id, "--force"])
    await eventually("n1 losing the route to n3's pods", async () => {
      const { stdout } = await execFileAsync("ip", ["-n", n1.host.netns, "route", "get", p3.v4])
      assert.notInclude(stdout, "tailscale0")
    })
    assert.isFalse(await reaches(p1, p3.v4))
    const afterRemoval = passes(n1)
    await eventually("n1's agent noting that n3 left", async () => assert.isAbove(passes(n1), afterRemoval + 1))
    const status = await runWith(collectStatus({
      stateDir: n1.stateDir,
      cniConfDir: path.join(dir, "net.d"),
      cniBinDir: distBin(),
      tailscaledSocket: n1.ts.socket,
      json: false
    }))
    const n3Routes = status.peerRoutes.find((p) => p.node === "n3")
    assert.isDefined(n3Routes, JSON.stringify(status.peerRoutes))
    assert.deepStrictEqual([...n3Routes!.routes], [...n3.cidrs].sort())
    assert.match(n3Routes!.state, /^unreachable: n3 left the tailnet at \d{4}-/)
    assert.deepStrictEqual(status.peerRoutes.filter((p) => p.state.startsWith("served by")).map((p) => p.node), ["n2"])

    const n4 = await addNode(4)
    const p4 = await addPod(n4, "p4")
    startAgent(n4)
    await served(n4)
    const n1Passes = passes(n1)
    await eventually("n1's agent passing once more", async () => assert.isAbove(passes(n1), n1Passes))
    assert.deepStrictEqual(await eventually("p1 reaching the new node's pod", () => send(p1, p4.v4), 30_000), { source: p1.v4, bytes: 1000 })
    assert.deepStrictEqual(await send(p4, p1.v6), { source: p4.v6, bytes: 1000 })
  })
})

describe("route approval by Headscale's autoApprovers, with no API key given to the agents", { timeout: TEST_TIMEOUT }, () => {
  let dir = ""
  let tailnet: RealTailnet
  const fibers: Array<Fiber.Fiber<unknown, unknown>> = []

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-cluster-auto-"))
    tailnet = await startRealTailnet({
      policy: {
        tagOwners: { "tag:k8s-node": ["cluster@"] },
        acls: [{ action: "accept", src: ["*"], dst: ["*:*"] }],
        autoApprovers: { routes: { "10.244.0.0/16": ["tag:k8s-node"], "fd10:244::/48": ["tag:k8s-node"] } }
      }
    })
  }, 900_000)

  afterAll(async () => {
    for (const fiber of fibers) await Effect.runPromise(Fiber.interrupt(fiber))
    await tailnet?.close()
    if (dir !== "") fs.rmSync(dir, { recursive: true, force: true })
  }, 120_000)

  it("each node's pod CIDRs are approved for it by the policy, and pods on the two nodes reach each other", async () => {
    const user = await tailnet.createUser("cluster")
    const key = (await tailnet.createAuthKey({ user, reusable: true, tags: ["tag:k8s-node"] })).key
    const pods: Array<{ netns: string; v4: string; v6: string }> = []
    const ids: Array<string> = []
    for (const i of [1, 2]) {
      const host = tailnet.addHost(`a${i}`)
      const ts = await tailnet.startNode(`a${i}`, { host, authKey: key, netfilter: true })
      ids.push((await ts.status()).Self.ID)
      const stateDir = path.join(dir, `state-${i}`)
      const cidrs = cidrsOf(i)
      const netns = tailnet.scope.create(`ap${i}`)
      const add = await execPlugin(
        path.join(distBin(), "containerscale"),
        { command: "ADD", containerId: `ap${i}`, netns: netnsPath(netns), ifname: "eth0", runIn: host.netns },
        {
          cniVersion: "1.0.0",
          name: "pods",
          type: "containerscale",
          mode: "router",
          ipam: { type: "containerscale-ipam", dataDir: path.join(stateDir, "ipam"), ranges: [[{ subnet: cidrs[0] }], [{ subnet: cidrs[1] }]] }
        }
      )
      assert.strictEqual(add.exitCode, 0, add.stdout + add.stderr)
      const ips = (add.json as { ips: Array<{ address: string }> }).ips.map((ip) => ip.address.split("/")[0]!)
      pods.push({ netns, v4: ips.find((ip) => !ip.includes(":"))!, v6: ips.find((ip) => ip.includes(":"))! })
      fibers.push(forkWith(runAgent({
        config: {
          stateDir, metricsAddress: "127.0.0.1:0", cniConfDir: path.join(dir, "net.d"), logLevel: "debug", logFile: undefined,
          podCidrs: cidrs, serviceCidrs: [], nodePrefs: "manage", kubernetesNode: undefined, tailscaledSocket: ts.socket,
          routerIntervalSeconds: 2, headscale: undefined, superviseSeconds: 3600, gcSeconds: 3600
        },
        env: {},
        state: { checks: new Map() },
        nodeNetns: netnsPath(host.netns)
      }), Log.memory()))
    }
    for (const [i, id] of ids.entries()) {
      await eventually(`Headscale approving a${i + 1}'s pod CIDRs by policy`, async () => {
        const node = (await tailnet.nodes()).find((n) => String(n.id) === id)
        assert.deepStrictEqual([...(node?.approved_routes ?? [])].sort(), [...cidrsOf(i + 1)].sort())
      })
    }
    for (const [from, to] of [[pods[0]!, pods[1]!], [pods[1]!, pods[0]!]] as const) {
      for (const family of ["v4", "v6"] as const) {
        await eventually(`a pod reaching the other node's pod over ${family}`, () =>
          execFileAsync("ip", ["netns", "exec", from.netns, "busybox", "ping", ...(family === "v6" ? ["-6"] : []), "-c", "1", "-W", "2", to[family]]))
      }
    }
  })
})

import { Ip } from "@containerscale/core"
import * as Log from "@containerscale/core/log"
import {
  type RealNode,
  type RealTailnet,
  type RealTailnetOptions,
  startRealTailnet,
  type TailnetHost,
  distBin
} from "@containerscale/sandbox"
import { execPlugin, netnsPath, processesWith, waitUntil } from "@containerscale/testing"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { nodeDaemonSocket } from "@containerscale/core/member"
import { Effect, Fiber, Redacted, Result } from "effect"
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

/** The agent's own tailscaled of a node in daemon mode, asked through the real CLI like a fixture node. */
const agentsDaemon = (tailnet: RealTailnet, name: string, host: TailnetHost, socket: string): RealNode => {
  const cli = async (args: ReadonlyArray<string>, timeoutMs = 30_000) =>
    (await execFileAsync(tailnet.runtime.tailscale, [`--socket=${socket}`, ...args], { timeout: timeoutMs })).stdout
  const notHere = () => Promise.reject(new Error("the agent runs this tailscaled"))
  return {
    name,
    host,
    dir: path.dirname(socket),
    socket,
    get pid() {
      return Number(fs.readFileSync(path.join(path.dirname(socket), "tailscaled.pid"), "utf8").trim())
    },
    cli,
    status: async () => JSON.parse(await cli(["status", "--json"])),
    stop: notHere,
    restart: notHere,
    log: () => fs.readFileSync(path.join(path.dirname(socket), "tailscaled.log"), "utf8")
  }
}

/**
 * Nodes, agents and pods on `tailnet`: each node a host namespace with a real tailscaled (netfilter
 * on), each agent in this process with its own state directory, each pod a namespace attached by
 * the plugin with a TCP server on PORT.
 */
const makeCluster = (tailnet: RealTailnet, dir: string, key: string, options: {
  readonly apiKey?: string | undefined
  readonly serviceCidrs?: ReadonlyArray<string> | undefined
  readonly nodeName?: (index: number) => string
  /** the agents run the nodes' tailscaled themselves (daemon mode), with this key */
  readonly daemonMode?: boolean | undefined
  /** node `i`'s pod CIDRs (default `cidrsOf`) */
  readonly cidrs?: ((index: number) => readonly [string, string]) | undefined
  /** the cluster's 4via6 site id, and whether its IPv4 pod CIDRs go only as via prefixes */
  readonly siteId?: number | undefined
  readonly viaOnly?: boolean | undefined
} = {}) => {
  const nodes: Array<ClusterNode> = []
  const pods: Array<Pod> = []
  const servers: Array<ReturnType<typeof spawn>> = []
  const nodeName = options.nodeName ?? ((i: number) => `n${i}`)
  const agentConfig = (n: ClusterNode): AgentConfig => ({
    stateDir: n.stateDir,
    metricsAddress: "127.0.0.1:0",
    cniConfDir: path.join(dir, "net.d"),
    logLevel: "debug",
    logFile: undefined,
    podCidrs: n.cidrs,
    serviceCidrs: options.serviceCidrs ?? [],
    nodePrefs: "manage",
    siteId: options.siteId,
    viaOnly: options.viaOnly,
    kubernetesNode: undefined,
    tailscaledSocket: n.ts.socket,
    nodeDaemon: options.daemonMode === true
      ? {
        dir: path.dirname(n.ts.socket),
        tailscaled: tailnet.runtime.tailscaled,
        loginServer: tailnet.loginServer,
        hostname: nodeName(n.index),
        tun: "tailscale0",
        port: 0,
        authKey: Redacted.make(key),
        keySource: "the test's key"
      }
      : undefined,
    routerIntervalSeconds: 2,
    headscale: undefined,
    superviseSeconds: options.daemonMode === true ? 2 : 3600,
    gcSeconds: 3600
  })

  const startAgent = (n: ClusterNode) => {
    const log = Log.memory()
    const fiber = forkWith(runAgent({
      config: agentConfig(n),
      env: {},
      state: { checks: new Map() },
      approver: options.apiKey === undefined ? undefined : approverAt(tailnet.apiUrl, options.apiKey),
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
    const host = tailnet.addHost(nodeName(index))
    const stateDir = path.join(dir, `state-${index}`)
    const ts = options.daemonMode === true
      ? agentsDaemon(tailnet, nodeName(index), host, nodeDaemonSocket(path.join(stateDir, "node")))
      : await tailnet.startNode(nodeName(index), { host, authKey: key, netfilter: true })
    const n: ClusterNode = { index, host, ts, stateDir, cidrs: (options.cidrs ?? cidrsOf)(index) }
    nodes.push(n)
    return n
  }

  const addPod = async (n: ClusterNode, name: string, extra: Record<string, unknown> = {}): Promise<Pod & { readonly result: unknown }> => {
    const netns = tailnet.scope.create(name)
    const add = await execPlugin(
      path.join(distBin(), "containerscale"),
      { command: "ADD", containerId: name, netns: netnsPath(netns), ifname: "eth0", runIn: n.host.netns },
      {
        cniVersion: "1.0.0",
        name: "pods",
        type: "containerscale",
        mode: "router",
        stateDir: n.stateDir,
        ...extra,
        ipam: { type: "containerscale-ipam", dataDir: path.join(n.stateDir, "ipam"), ranges: [[{ subnet: n.cidrs[0] }], [{ subnet: n.cidrs[1] }]] }
      }
    )
    assert.strictEqual(add.exitCode, 0, `${add.stdout}${add.stderr}`)
    const ips = (add.json as { ips: Array<{ address: string }> }).ips.map((ip) => ip.address.split("/")[0]!)
    const pod = { name, node: n, netns, v4: ips.find((ip) => !ip.includes(":"))!, v6: ips.find((ip) => ip.includes(":"))!, result: add.json }
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

  /** Nodes `indices`, each with a pod (`pod(i)`) and its agent started. */
  const grow = async (indices: ReadonlyArray<number>, pod = (i: number) => `p${i}`) => {
    for (const i of indices) {
      const n = await addNode(i)
      await addPod(n, pod(i))
      startAgent(n)
    }
  }
  const dispose = async () => {
    for (const n of nodes) await stopAgent(n)
    for (const s of servers) s.kill("SIGKILL")
    // the agents' own tailscaled outlive them, as on a node
    if (options.daemonMode === true) for (const n of nodes) killQuietly(n.ts.pid)
  }
  return { nodes, pods, startAgent, stopAgent, served, passes, addNode, addPod, removePod, send, reaches, grow, dispose }
}
type Cluster = ReturnType<typeof makeCluster>

const killQuietly = (pid: number) => {
  try {
    process.kill(pid, "SIGKILL")
  } catch {
    // gone
  }
}

/**
 * For one describe block: a real tailnet of its own and a temp folder, made before its tests, and
 * after them the clusters made with `cluster` disposed, the tailnet closed and the folder removed.
 */
const ownTailnet = (name: string, options: RealTailnetOptions = {}) => {
  const own = {
    dir: "",
    tailnet: undefined as unknown as RealTailnet,
    clusters: [] as Array<Cluster>,
    cluster: (key: string, clusterOptions?: Parameters<typeof makeCluster>[3], sub?: string): Cluster => {
      const c = makeCluster(own.tailnet, sub === undefined ? own.dir : path.join(own.dir, sub), key, clusterOptions)
      own.clusters.push(c)
      return c
    }
  }
  beforeAll(async () => {
    own.dir = fs.mkdtempSync(path.join(os.tmpdir(), `cs-cluster-${name}-`))
    own.tailnet = await startRealTailnet(options)
  }, 900_000)
  afterAll(async () => {
    for (const c of own.clusters) await c.dispose()
    await own.tailnet?.close()
    if (own.dir !== "") fs.rmSync(own.dir, { recursive: true, force: true })
  }, 120_000)
  return own
}

describe("the cluster network over the real tailnet", { timeout: TEST_TIMEOUT }, () => {
  const own = ownTailnet("real")
  let tailnet: RealTailnet
  let dir = ""
  let c: Cluster

  beforeAll(async () => {
    ;({ tailnet, dir } = own)
    const user = await tailnet.createUser("cluster")
    c = own.cluster((await tailnet.createAuthKey({ user, reusable: true, tags: ["tag:k8s-node"] })).key, { apiKey: await tailnet.createApiKey() })
    for (const i of [1, 2, 3]) await c.addNode(i)
    for (const n of c.nodes) await c.addPod(n, `p${n.index}`)
  }, 900_000)

  it("without the agents, pods on different nodes do not reach each other: the nodes share no route", async () => {
    const [p1, p2] = [c.pods[0]!, c.pods[1]!]
    assert.isFalse(await c.reaches(p1, p2.v4))
    assert.isFalse(await c.reaches(p2, p1.v6))
    const { stdout } = await execFileAsync("ip", ["-n", p1.node.host.netns, "route", "get", p2.v4])
    assert.notInclude(stdout, "tailscale0")
  })

  it("with an agent on each node, every pod reaches every other by its pod IP, IPv4 and IPv6, with its own source address", async () => {
    for (const n of c.nodes) c.startAgent(n)
    for (const n of c.nodes) await c.served(n)
    for (const n of c.nodes) {
      const prefs = JSON.parse(await n.ts.cli(["debug", "prefs"])) as { RouteAll: boolean; NoSNAT: boolean; AdvertiseRoutes: Array<string> }
      assert.deepStrictEqual([prefs.RouteAll, prefs.NoSNAT, [...prefs.AdvertiseRoutes].sort()], [true, true, [...n.cidrs].sort()])
    }
    for (const from of c.pods) {
      for (const to of c.pods.filter((p) => p.node !== from.node)) {
        for (const family of ["v4", "v6"] as const) {
          const answer = await eventually(`${from.name} -> ${to.name} over ${family}`, () => c.send(from, to[family]), 60_000)
          assert.deepStrictEqual(answer, { source: from[family], bytes: 1000 }, `${from.name} -> ${to.name} (${family})`)
        }
      }
    }
    const { stdout } = await execFileAsync("ip", ["-n", c.pods[0]!.node.host.netns, "route", "get", c.pods[1]!.v4])
    assert.include(stdout, "dev tailscale0")
  })

  it("a transfer of 8 MB crosses the tailnet whole: the pods' MTU fits the tailnet's", async () => {
    const [p1, p3] = [c.pods[0]!, c.pods[2]!]
    const mtu = (await execFileAsync("ip", ["-n", p1.netns, "-j", "link", "show", "eth0"])).stdout
    assert.strictEqual((JSON.parse(mtu) as Array<{ mtu: number }>)[0]!.mtu, 1280)
    assert.deepStrictEqual(await c.send(p1, p3.v4, 8 * 1024 * 1024), { source: p1.v4, bytes: 8 * 1024 * 1024 })
    assert.deepStrictEqual(await c.send(p3, p1.v6, 8 * 1024 * 1024), { source: p3.v6, bytes: 8 * 1024 * 1024 })
  })

  it("pods added and removed while traffic flows leave the others' traffic whole, and the new pods are reachable", async () => {
    const [p1, p2] = [c.pods[0]!, c.pods[1]!]
    const flow = execFileAsync("ip", ["netns", "exec", p1.netns, "busybox", "ping", "-c", "40", "-i", "0.1", "-W", "2", p2.v4], { timeout: 60_000 })
    const extra = await c.addPod(c.nodes[2]!, "p3b")
    const more = await c.addPod(c.nodes[1]!, "p2b")
    await c.removePod(extra)
    const { stdout } = await flow
    assert.match(stdout, /40 packets transmitted, 40 packets received/)
    assert.deepStrictEqual(await c.send(p1, more.v4), { source: p1.v4, bytes: 1000 })
    assert.deepStrictEqual(await c.send(more, p1.v6), { source: more.v6, bytes: 1000 })
  })

  it("the tailnet is the only path: with one node's tailscaled down its pods are cut off, and back when it is up", async () => {
    const [p1, p2] = [c.pods[0]!, c.pods[1]!]
    const n2 = c.nodes[1]!
    await n2.ts.cli(["down"])
    assert.isFalse(await c.reaches(p1, p2.v4))
    await n2.ts.cli(["up"], 60_000)
    await eventually("p1 reaching p2 after tailscale up", () => c.send(p1, p2.v4))
  })

  it("a restarted tailscaled and a restarted agent keep the node's pods reachable", async () => {
    const [p1, p2, p3] = [c.pods[0]!, c.pods[1]!, c.pods[2]!]
    const n2 = c.nodes[1]!
    const before = c.passes(n2)
    n2.ts = await n2.ts.restart()
    await c.served(n2, before)
    await eventually("p1 reaching p2 after its tailscaled restarted", () => c.send(p1, p2.v4))
    await eventually("p2 reaching p3 after its tailscaled restarted", () => c.send(p2, p3.v6))

    const n1 = c.nodes[0]!
    await c.stopAgent(n1)
    assert.deepStrictEqual(await c.send(p3, p1.v4), { source: p3.v4, bytes: 1000 }, "the routes outlive the agent")
    c.startAgent(n1)
    await c.served(n1)
    assert.deepStrictEqual(await c.send(p3, p1.v4), { source: p3.v4, bytes: 1000 })
  })

  it("MagicDNS for router-mode pods: 100.100.100.100 and the tailnet's suffix lead the result's DNS, and the node's tailscaled answers", async () => {
    const [n1, n2] = [c.nodes[0]!, c.nodes[1]!]
    const pod = await c.addPod(n1, "pdns", { magicDns: true, dns: { nameservers: ["10.96.0.10"], search: ["default.svc.cluster.local"] } })
    assert.deepStrictEqual((pod.result as { dns?: unknown }).dns, {
      nameservers: ["100.100.100.100", "10.96.0.10"],
      search: [tailnet.baseDomain, "default.svc.cluster.local"]
    })
    const n2Ip = ((await n2.ts.status()).Self.TailscaleIPs as Array<string>).find((ip) => !ip.includes(":"))!
    const lookup = (name: string) =>
      execFileAsync("ip", ["netns", "exec", pod.netns, "busybox", "nslookup", name, "100.100.100.100"], { timeout: 15_000 })
        .then(({ stdout }) => stdout, (e: { stdout?: string; stderr?: string }) => `${e.stdout ?? ""}${e.stderr ?? ""}`)
    assert.include(await eventually("a tailnet name from the pod", async () => {
      const out = await lookup(`n2.${tailnet.baseDomain}`)
      assert.include(out, n2Ip)
      return out
    }), n2Ip)
    // a name outside the tailnet is not the node's to answer (its accept-dns stays off): SERVFAIL, so the pod's resolver asks the next server
    assert.include(await lookup("example.com"), "SERVFAIL")
    await c.removePod(pod)
  })

  it("what is SNATed: with tailscaled's default subnet-route SNAT a pod sees its node's address, and the agent turns it off again", async () => {
    const [p1, p2] = [c.pods[0]!, c.pods[1]!]
    const n2 = c.nodes[1]!
    await c.stopAgent(n2)
    await n2.ts.cli(["set", "--snat-subnet-routes=true"])
    const masqueraded = await eventually("p1 -> p2 masqueraded by n2", async () => {
      const answer = await c.send(p1, p2.v4)
      assert.notStrictEqual(answer.source, p1.v4)
      return answer
    })
    const gateway = JSON.parse((await execFileAsync("ip", ["-n", p2.netns, "-j", "-4", "route", "show", "default"])).stdout)[0].gateway
    assert.strictEqual(masqueraded.source, gateway, "tailscaled masquerades what it forwards from the tailnet to the pod's link address of the node")
    c.startAgent(n2)
    await c.served(n2)
    assert.deepStrictEqual(await c.send(p1, p2.v4), { source: p1.v4, bytes: 1000 })
  })

  it("a node removed: its routes are withdrawn, the others say why its pods are unreachable; a node added is reachable within a pass", async () => {
    const [p1, p3] = [c.pods[0]!, c.pods[2]!]
    const [n1, n3] = [c.nodes[0]!, c.nodes[2]!]
    await c.stopAgent(n3)
    const id = (await n3.ts.status()).Self.ID as string
    await n3.ts.stop()
    await tailnet.headscale(["nodes", "delete", "--identifier", id, "--force"])
    await eventually("n1 losing the route to n3's pods", async () => {
      const { stdout } = await execFileAsync("ip", ["-n", n1.host.netns, "route", "get", p3.v4])
      assert.notInclude(stdout, "tailscale0")
    })
    assert.isFalse(await c.reaches(p1, p3.v4))
    const afterRemoval = c.passes(n1)
    await eventually("n1's agent noting that n3 left", async () => assert.isAbove(c.passes(n1), afterRemoval + 1))
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

    const n4 = await c.addNode(4)
    const p4 = await c.addPod(n4, "p4")
    c.startAgent(n4)
    await c.served(n4)
    const n1Passes = c.passes(n1)
    await eventually("n1's agent passing once more", async () => assert.isAbove(c.passes(n1), n1Passes))
    assert.deepStrictEqual(await eventually("p1 reaching the new node's pod", () => c.send(p1, p4.v4), 30_000), { source: p1.v4, bytes: 1000 })
    assert.deepStrictEqual(await c.send(p4, p1.v6), { source: p4.v6, bytes: 1000 })
  })
})

describe("route approval by Headscale's autoApprovers, with no API key given to the agents", { timeout: TEST_TIMEOUT }, () => {
  const own = ownTailnet("auto", {
    policy: {
      tagOwners: { "tag:k8s-node": ["cluster@"] },
      acls: [{ action: "accept", src: ["*"], dst: ["*:*"] }],
      autoApprovers: { routes: { "10.244.0.0/16": ["tag:k8s-node"], "fd10:244::/48": ["tag:k8s-node"] } }
    }
  })

  it("each node's pod CIDRs are approved for it by the policy, and pods on the two nodes reach each other", async () => {
    const { tailnet } = own
    const user = await tailnet.createUser("cluster")
    const c = own.cluster((await tailnet.createAuthKey({ user, reusable: true, tags: ["tag:k8s-node"] })).key)
    await c.grow([1, 2])
    for (const n of c.nodes) {
      const id = (await n.ts.status()).Self.ID as string
      await eventually(`Headscale approving node ${n.index}'s pod CIDRs by policy`, async () => {
        const shown = (await tailnet.nodes()).find((h) => String(h.id) === id)
        assert.deepStrictEqual([...(shown?.approved_routes ?? [])].sort(), [...n.cidrs].sort())
      })
    }
    const [p1, p2] = c.pods as [Pod, Pod]
    for (const [from, to] of [[p1, p2], [p2, p1]] as const) {
      for (const family of ["v4", "v6"] as const) {
        assert.deepStrictEqual(await eventually(`${from.name} -> ${to.name} over ${family}`, () => c.send(from, to[family])), { source: from[family], bytes: 1000 })
      }
    }
  })
})

describe("the cluster's service CIDR on the tailnet, with failover between nodes", { timeout: TEST_TIMEOUT }, () => {
  const SERVICE_CIDR = "10.96.0.0/16"
  const CLUSTER_IP = "10.96.0.10"
  const own = ownTailnet("svc")

  it("every node advertises it, Headscale makes one the primary, and a tailnet peer reaches a ClusterIP through another node when the primary goes", async () => {
    const { tailnet } = own
    const user = await tailnet.createUser("cluster")
    const key = (await tailnet.createAuthKey({ user, reusable: true, tags: ["tag:k8s-node"] })).key
    const c = own.cluster(key, { apiKey: await tailnet.createApiKey(), serviceCidrs: [SERVICE_CIDR] })
    await c.grow([1, 2, 3])
    for (const n of c.nodes) await c.served(n)
    const peerHost = tailnet.addHost("peer")
    const peer = await tailnet.startNode("peer", { host: peerHost, authKey: (await tailnet.createAuthKey({ user })).key, acceptRoutes: true })

    const ids = new Map<string, ClusterNode>()
    for (const n of c.nodes) ids.set(String((await n.ts.status()).Self.ID), n)
    const primary = async (not?: ClusterNode) =>
      eventually(`one node${not === undefined ? "" : ` other than n${not.index}`} serving the service CIDR`, async () => {
        const serving = (await tailnet.nodes()).filter((h) => (h.subnet_routes ?? []).includes(SERVICE_CIDR) && ids.has(String(h.id)))
        assert.strictEqual(serving.length, 1, JSON.stringify(serving.map((h) => h.name)))
        assert.notStrictEqual(ids.get(String(serving[0]!.id)), not)
        assert.deepStrictEqual(
          [...((await tailnet.nodes()).find((h) => h.id === serving[0]!.id)?.approved_routes ?? [])].sort(),
          [...ids.get(String(serving[0]!.id))!.cidrs, SERVICE_CIDR].sort()
        )
        return ids.get(String(serving[0]!.id))!
      })
    const first = await primary()
    // kube-proxy's part, on every node: the ClusterIP to a pod on a node that stays, masquerading what comes from outside the cluster
    const target = c.pods.find((p) => p.node !== first)!
    for (const n of c.nodes) {
      const nat = (args: ReadonlyArray<string>) => execFileAsync("ip", ["netns", "exec", n.host.netns, "iptables", "-t", "nat", ...args])
      await nat(["-A", "PREROUTING", "-d", `${CLUSTER_IP}/32`, "-p", "tcp", "--dport", String(PORT), "-j", "DNAT", "--to-destination", `${target.v4}:${PORT}`])
      await nat(["-A", "POSTROUTING", "!", "-s", "10.244.0.0/16", "-d", `${target.v4}/32`, "-j", "MASQUERADE"])
    }
    const fromPeer = () =>
      execFileAsync("ip", ["netns", "exec", peerHost.netns, process.execPath, "-e", CLIENT, CLUSTER_IP, String(PORT), "1000"], { timeout: 30_000 })
        .then(({ stdout }) => Number(stdout.trim().split(" ")[1]))
    assert.strictEqual(await eventually("the peer reaching the ClusterIP", fromPeer, 60_000), 1000)

    await c.stopAgent(first)
    await first.ts.stop()
    const started = Date.now()
    const second = await primary(first)
    assert.strictEqual(await eventually("the peer reaching the ClusterIP through the new primary", fromPeer, 60_000), 1000)
    const peerRoutes = Object.values((await peer.status()).Peer ?? {}) as Array<{ HostName: string; PrimaryRoutes?: Array<string> }>
    assert.include(peerRoutes.find((p) => p.HostName === `n${second.index}`)?.PrimaryRoutes ?? [], SERVICE_CIDR)
    console.log(`service CIDR failover from n${first.index} to n${second.index}: ${Date.now() - started} ms after the primary's tailscaled stopped`)
  })
})

describe("daemon mode: the agent runs and supervises the node's tailscaled", { timeout: TEST_TIMEOUT }, () => {
  const own = ownTailnet("daemon")
  let c: Cluster
  let key = ""

  it("on nodes without a tailscaled, the agents start their own, keep the key out of sight, and pods reach each other", async () => {
    const { tailnet } = own
    const user = await tailnet.createUser("cluster")
    key = (await tailnet.createAuthKey({ user, reusable: true, tags: ["tag:k8s-node"] })).key
    c = own.cluster(key, { apiKey: await tailnet.createApiKey(), daemonMode: true })
    for (const i of [1, 2]) {
      const n = await c.addNode(i)
      assert.deepStrictEqual(processesWith(`--socket=${n.ts.socket}`), [], "no tailscaled before the agent")
      await c.addPod(n, `p${i}`)
      c.startAgent(n)
    }
    for (const n of c.nodes) await c.served(n)
    for (const n of c.nodes) {
      const pid = n.ts.pid
      assert.deepStrictEqual(processesWith(`--socket=${n.ts.socket}`), [pid])
      assert.strictEqual(fs.readlinkSync(`/proc/${pid}/ns/net`), `net:[${fs.statSync(netnsPath(n.host.netns)).ino}]`, "in the node's namespace")
      for (const f of ["cmdline", "environ"]) assert.notInclude(fs.readFileSync(`/proc/${pid}/${f}`, "utf8"), key, f)
      assert.notInclude(n.ts.log(), key)
      assert.notInclude(JSON.stringify(n.agent!.log.lines), key)
    }
    const [p1, p2] = c.pods as [Pod, Pod]
    for (const family of ["v4", "v6"] as const) {
      assert.deepStrictEqual(await eventually(`p1 -> p2 over ${family}`, () => c.send(p1, p2[family])), { source: p1[family], bytes: 1000 })
      assert.deepStrictEqual(await eventually(`p2 -> p1 over ${family}`, () => c.send(p2, p1[family])), { source: p2[family], bytes: 1000 })
    }
  })

  it("a killed tailscaled is started again as the same node, and a restarted agent adopts the running one", async () => {
    const [n1, n2] = c.nodes as [ClusterNode, ClusterNode]
    const [p1, p2] = c.pods as [Pod, Pod]
    const id = (await n2.ts.status()).Self.ID as string
    const killed = n2.ts.pid
    process.kill(killed, "SIGKILL")
    await eventually("n2's agent starting its tailscaled again", async () => {
      assert.notStrictEqual(n2.ts.pid, killed)
      assert.strictEqual((await n2.ts.status()).BackendState, "Running")
    })
    assert.strictEqual((await n2.ts.status()).Self.ID, id, "the same node, from its state")
    assert.strictEqual((await own.tailnet.nodes()).length, 2)
    assert.deepStrictEqual(await eventually("p1 -> p2 after the restart", () => c.send(p1, p2.v4)), { source: p1.v4, bytes: 1000 })

    const running = n1.ts.pid
    await c.stopAgent(n1)
    assert.deepStrictEqual(await c.send(p2, p1.v4), { source: p2.v4, bytes: 1000 }, "tailscaled outlives its agent")
    c.startAgent(n1)
    await c.served(n1)
    assert.strictEqual(n1.ts.pid, running)
    assert.deepStrictEqual(processesWith(`--socket=${n1.ts.socket}`), [running])
  })
})

describe("two clusters with the same pod CIDRs on one tailnet, through 4via6", { timeout: TEST_TIMEOUT }, () => {
  const tags = ["tag:cluster-a", "tag:cluster-b"]
  const own = ownTailnet("via", {
    policy: {
      tagOwners: { "tag:cluster-a": ["mc@"], "tag:cluster-b": ["mc@"] },
      // the tailnet's own addresses (the via prefixes are among them) and the clusters' own (distinct) IPv6 pod CIDRs
      grants: [{ src: ["*", "fd10::/16"], dst: ["100.64.0.0/10", "fd7a:115c:a1e0::/48", "fd10::/16"], ip: ["*"] }],
      autoApprovers: { routes: { "10.244.0.0/16": tags, "fd10::/16": tags, "fd7a:115c:a1e0:b1a::/64": tags } }
    }
  })
  const via = (site: number, ip: string) => Ip.viaPrefix(site, Result.getOrThrow(Ip.parseSubnet(`${ip}/32`))).split("/")[0]!

  it("with only via prefixes advertised, a pod reaches the other cluster's pod at its 4via6 address and name, and a peer reaches both", async () => {
    const { tailnet, clusters } = own
    const user = await tailnet.createUser("mc")
    for (const [site, letter] of [[7, "a"], [8, "b"]] as const) {
      const key = (await tailnet.createAuthKey({ user, reusable: true, tags: [`tag:cluster-${letter}`] })).key
      const c = own.cluster(key, {
        siteId: site,
        viaOnly: true,
        nodeName: (i) => `${letter}${i}`,
        // the same IPv4 pod CIDR in both clusters; IPv6 ones of their own, for the replies of 4via6 traffic
        cidrs: (i) => [`10.244.${i}.0/24`, `fd10:${letter}:0:${i}::/64`]
      }, letter)
      await c.grow([1], () => `${letter}p1`)
    }
    const [a, b] = clusters as [Cluster, Cluster]
    const [pa, pb] = [a.pods[0]!, b.pods[0]!]
    assert.strictEqual(pa.v4, pb.v4, "the clusters overlap")
    for (const [c, site] of [[a, 7], [b, 8]] as const) {
      const n = c.nodes[0]!
      const prefs = JSON.parse(await n.ts.cli(["debug", "prefs"])) as { AdvertiseRoutes: Array<string> }
      assert.deepStrictEqual([...prefs.AdvertiseRoutes].sort(), [n.cidrs[1], Ip.viaPrefix(site, Result.getOrThrow(Ip.parseSubnet(n.cidrs[0])))].sort())
    }

    for (const [from, to, site] of [[pa, pb, 8], [pb, pa, 7]] as const) {
      const answer = await eventually(`${from.name} -> ${to.name} at site ${site}`, () => a.send(from, via(site, to.v4)))
      // the other cluster's node answers 4via6 itself and reaches its pod from its own address on the pod link
      assert.deepStrictEqual(answer, { source: `${to.v4.split(".").slice(0, 3).join(".")}.1`, bytes: 1000 })
    }
    const name = `${pb.v4.replaceAll(".", "-")}-via-8`
    const { stdout } = await execFileAsync("ip", ["netns", "exec", pa.netns, "busybox", "nslookup", "-type=AAAA", name, "100.100.100.100"])
    assert.include(stdout, via(8, pb.v4))
    for (const c of clusters) {
      const n = c.nodes[0]!
      const table52 = (await execFileAsync("ip", ["-n", n.host.netns, "route", "show", "table", "52"])).stdout
      assert.notInclude(table52, n.cidrs[0], `${n.host.name} routes its own pod CIDR to its pods, not to the other cluster`)
    }

    const peerHost = tailnet.addHost("peer")
    await tailnet.startNode("peer", { host: peerHost, authKey: (await tailnet.createAuthKey({ user })).key, acceptRoutes: true })
    for (const [to, site] of [[pa, 7], [pb, 8]] as const) {
      const got = await eventually(`the peer -> ${to.name} at site ${site}`, () =>
        execFileAsync("ip", ["netns", "exec", peerHost.netns, process.execPath, "-e", CLIENT, via(site, to.v4), String(PORT), "1000"], { timeout: 30_000 }))
      assert.match(got.stdout, / 1000$/)
    }
  })
})

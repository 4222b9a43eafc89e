import { type RealNode, type RealTailnet, startRealTailnet, type TailnetHost } from "@containerscale/sandbox"
import { netnsPath, netnsScope, processesWith, removeLeftovers, uniquePrefix } from "@containerscale/testing"
import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { promisify } from "node:util"
import { asyncCleanup, cleanupAll, elapsedMs, heading, loadavg, machine, median, ms, note, now, percentile, ratio, repoRoot, table, tempDir } from "./common.ts"

/**
 * The cluster network's cost: pods on two nodes that reach each other only through the real
 * tailnet (Headscale, DERP and tailscaled in TUN mode from the test kit, each node with its own
 * `containerscale-agent` and pods attached by the `containerscale` plugin in router mode), against
 * two namespaces joined directly by a veth pair, in the same run: round-trip time and TCP
 * throughput. Then the time from a new node's agent start to its pod answering a pod on another
 * node.
 */

const execFileAsync = promisify(execFile)
const PINGS = Number(process.env.BENCH_CLUSTER_PINGS ?? 200)
const MBYTES = Number(process.env.BENCH_CLUSTER_MB ?? 64)
const TRANSFERS = Number(process.env.BENCH_CLUSTER_TRANSFERS ?? 5)
const JOINS = Number(process.env.BENCH_CLUSTER_JOINS ?? 3)
const PORT = 7070
const began = now()

const dir = tempDir("cluster")
fs.chmodSync(dir, 0o700)
// private copies: a rebuild of dist/ by other work during the run changes nothing here
const copy = (name: string) => {
  const to = path.join(dir, name)
  fs.copyFileSync(path.join(repoRoot, "dist/bin", name), to)
  fs.chmodSync(to, 0o755)
  return to
}
const plugin = copy("containerscale")
const agentBinary = copy("containerscale-agent")
fs.mkdirSync(path.join(dir, "bin"))
for (const b of ["containerscale-ipam"]) fs.copyFileSync(path.join(repoRoot, "dist/bin", b), path.join(dir, "bin", b))
fs.chmodSync(path.join(dir, "bin", "containerscale-ipam"), 0o755)
const scope = netnsScope(`${uniquePrefix("csb")}-`)
const tailnetPrefix = `${uniquePrefix("csbt")}-`
const children: Array<ChildProcess> = []

let tailnet: RealTailnet | undefined
const cleanup = asyncCleanup(() => [
  () => children.forEach((c) => c.kill("SIGKILL")),
  () => tailnet?.close(),
  () => removeLeftovers(tailnetPrefix),
  () => scope.dispose(),
  () => cleanupAll()
])

const SERVER = `
const net = require("node:net")
net.createServer((s) => {
  let bytes = 0
  s.on("data", (d) => { bytes += d.length })
  s.on("end", () => s.end(String(bytes)))
  s.on("error", () => {})
}).listen(${PORT}, "0.0.0.0", () => process.stdout.write("listening\\n"))
`
/** Sends `bytes` and prints the milliseconds from connect to the server's count. */
const CLIENT = `
const net = require("node:net")
const [host, bytes] = process.argv.slice(1)
let t0
const chunk = Buffer.alloc(1 << 20, 120)
const s = net.connect({ host, port: ${PORT} }, () => {
  t0 = process.hrtime.bigint()
  let left = Number(bytes)
  const write = () => {
    while (left > 0) {
      const n = Math.min(left, chunk.length)
      left -= n
      if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return s.once("drain", write)
    }
    s.end()
  }
  write()
})
let answer = ""
s.on("data", (d) => { answer += d })
s.on("end", () => { process.stdout.write(answer + " " + (Number(process.hrtime.bigint() - t0) / 1e6)); process.exit(0) })
s.on("error", (e) => { process.stderr.write(e.message); process.exit(1) })
`

interface Node {
  readonly host: TailnetHost
  readonly ts: RealNode
  readonly stateDir: string
  readonly cidr: string
}

const inNetns = (netns: string, argv: ReadonlyArray<string>, timeout = 60_000) => execFileAsync("ip", ["netns", "exec", netns, ...argv], { timeout })

const serve = async (netns: string) => {
  const server = spawn("ip", ["netns", "exec", netns, process.execPath, "-e", SERVER], { stdio: ["ignore", "pipe", "inherit"] })
  children.push(server)
  await new Promise<void>((resolve) => server.stdout!.once("data", () => resolve()))
}

/** MB/s and ms of a transfer of MBYTES from `from` to the server at `to`. */
const transfer = async (from: string, to: string) => {
  const { stdout } = await inNetns(from, [process.execPath, "-e", CLIENT, to, String(MBYTES * 2 ** 20)], 120_000)
  const [bytes, took] = stdout.trim().split(" ").map(Number) as [number, number]
  if (bytes !== MBYTES * 2 ** 20) throw new Error(`the server got ${bytes} bytes of ${MBYTES * 2 ** 20}`)
  return { ms: took, mbps: (bytes / 2 ** 20) / (took / 1000) }
}

/** Round trips of `PINGS` echo requests, as busybox ping reports each. */
const pings = async (from: string, to: string) => {
  const { stdout } = await inNetns(from, ["busybox", "ping", "-c", String(PINGS), "-i", "0.01", "-W", "2", to], 120_000)
  return [...stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]))
}

const addPod = async (node: Node, name: string) => {
  const netns = scope.create(name)
  const stdout = execFileSync("ip", ["netns", "exec", node.host.netns, plugin], {
    encoding: "utf8",
    env: {
      PATH: process.env.PATH,
      CNI_COMMAND: "ADD",
      CNI_CONTAINERID: name,
      CNI_NETNS: netnsPath(netns),
      CNI_IFNAME: "eth0",
      CNI_PATH: `${path.join(dir, "bin")}:/usr/lib/cni`
    },
    input: JSON.stringify({
      cniVersion: "1.0.0",
      name: "pods",
      type: "containerscale",
      mode: "router",
      stateDir: node.stateDir,
      ipam: { type: "containerscale-ipam", dataDir: path.join(node.stateDir, "ipam"), ranges: [[{ subnet: node.cidr }]] }
    })
  })
  const ip = (JSON.parse(stdout) as { ips: Array<{ address: string }> }).ips[0]!.address.split("/")[0]!
  await serve(netns)
  return { netns, ip }
}

const startAgent = (node: Node, apiKey: string) => {
  const config = path.join(node.stateDir, "agent.json")
  fs.mkdirSync(node.stateDir, { recursive: true, mode: 0o700 })
  fs.writeFileSync(config, JSON.stringify({
    stateDir: node.stateDir,
    cniConfDir: path.join(dir, "net.d"),
    router: { podCidrs: [node.cidr], tailscaledSocket: node.ts.socket, intervalSeconds: 5 },
    headscale: { url: tailnet!.loginServer },
    log: { file: path.join(node.stateDir, "agent.log") }
  }))
  const agent = spawn("ip", ["netns", "exec", node.host.netns, agentBinary, "--config", config, "--metrics-address", "127.0.0.1:0"], {
    env: { PATH: process.env.PATH, CONTAINERSCALE_HEADSCALE_API_KEY: apiKey },
    stdio: "ignore"
  })
  children.push(agent)
  return agent
}

const reachable = (from: string, to: string) =>
  inNetns(from, [process.execPath, "-e", CLIENT, to, "1"], 3_000).then(() => true, () => false)

const main = async () => {
  console.log("# The cluster network over the tailnet: pods on two nodes, against a direct veth\n")
  console.log(machine())
  tailnet = await startRealTailnet({ prefix: tailnetPrefix })
  const user = await tailnet.createUser("bench")
  const key = (await tailnet.createAuthKey({ user, reusable: true, tags: ["tag:bench"] })).key
  const apiKey = await tailnet.createApiKey()
  const addNode = async (i: number): Promise<Node> => {
    const host = tailnet!.addHost(`b${i}`)
    const ts = await tailnet!.startNode(`b${i}`, { host, authKey: key, netfilter: true })
    return { host, ts, stateDir: path.join(dir, `node-${i}`), cidr: `10.244.${i}.0/24` }
  }
  const [n1, n2] = [await addNode(1), await addNode(2)]
  const [p1, p2] = [await addPod(n1, "p1"), await addPod(n2, "p2")]
  startAgent(n1, apiKey)
  startAgent(n2, apiKey)
  const waited = now()
  while (!(await reachable(p1.netns, p2.ip)) || !(await reachable(p2.netns, p1.ip))) {
    if (elapsedMs(waited) > 120_000) {
      const logs = [n1, n2].map((n) => fs.readFileSync(path.join(n.stateDir, "agent.log"), "utf8").trim().split("\n").slice(-5).join("\n"))
      throw new Error(`the two nodes' pods did not reach each other within 2 minutes; the agents' last lines:\n${logs.join("\n")}`)
    }
  }
  // a direct path from the first ping on: tailscale ping until it says so
  await n1.ts.cli(["ping", "--c", "30", "--until-direct", (await n2.ts.status()).Self.TailscaleIPs[0]], 60_000).catch(() => undefined)

  // the same pair of namespaces' kind, joined by a veth pair and nothing else
  const [v1, v2] = [scope.create("v1"), scope.create("v2")]
  const veth = `${tailnetPrefix.slice(0, 8)}v`
  execFileSync("ip", ["-n", v1, "link", "add", "eth0", "mtu", "1280", "type", "veth", "peer", "name", veth, "netns", v2])
  execFileSync("ip", ["-n", v2, "link", "set", veth, "name", "eth0"])
  for (const [ns, ip] of [[v1, "10.99.0.1/24"], [v2, "10.99.0.2/24"]] as const) {
    execFileSync("ip", ["-n", ns, "addr", "add", ip, "dev", "eth0"])
    execFileSync("ip", ["-n", ns, "link", "set", "eth0", "up"])
    execFileSync("ip", ["-n", ns, "link", "set", "lo", "up"])
  }
  await serve(v2)

  const rows: Array<Array<string>> = []
  const tailnetRtt = await pings(p1.netns, p2.ip)
  const vethRtt = await pings(v1, "10.99.0.2")
  rows.push(
    ["round trip p50 (ms)", ms(median(tailnetRtt)), ms(median(vethRtt)), ratio(median(tailnetRtt), median(vethRtt))],
    ["round trip p99 (ms)", ms(percentile(tailnetRtt, 99)), ms(percentile(vethRtt, 99)), ratio(percentile(tailnetRtt, 99), percentile(vethRtt, 99))]
  )
  const tailnetTcp: Array<number> = []
  const vethTcp: Array<number> = []
  for (let i = 0; i < TRANSFERS; i++) {
    tailnetTcp.push((await transfer(p1.netns, p2.ip)).mbps)
    vethTcp.push((await transfer(v1, "10.99.0.2")).mbps)
  }
  rows.push([`TCP, ${MBYTES} MiB one way, p50 (MiB/s)`, median(tailnetTcp).toFixed(1), median(vethTcp).toFixed(1), ratio(median(tailnetTcp), median(vethTcp))])
  heading(`Pod to pod: across the tailnet (two nodes, WireGuard in tailscaled) and over a direct veth (${PINGS} pings, ${TRANSFERS} transfers)`)
  console.log(table(["what", "tailnet", "veth", "tailnet / veth"], rows))

  const joins: Array<number> = []
  for (let i = 0; i < JOINS; i++) {
    const n = await addNode(3 + i)
    const p = await addPod(n, `j${i}`)
    const started = now()
    startAgent(n, apiKey)
    while (!(await reachable(p1.netns, p.ip))) {
      if (elapsedMs(started) > 120_000) throw new Error(`node ${3 + i}'s pod was not reachable within 2 minutes`)
    }
    joins.push(elapsedMs(started))
  }
  heading(`A new node: its agent's start -> its pod answering a pod on another node (${JOINS} nodes)`)
  console.log(table(["what", "p50", "max"], [["agent start -> reachable (ms)", ms(median(joins)), ms(Math.max(...joins))]]))
  note(`\nThe agents reconcile every 5 s and at once when the node's tailscaled is Running; Headscale applies an approval at its next batch tick.`)
  if (processesWith(`--socket=${dir}/`).length > 0) note("(member daemons left: none expected)")
}

try {
  await main()
} catch (e) {
  console.error(`cluster benchmark failed: ${(e as Error).stack ?? String(e)}`)
  process.exitCode = 1
} finally {
  await cleanup()
}
note(`\ncluster benchmark done in ${(elapsedMs(began) / 1000).toFixed(1)} s (${loadavg()})`)

import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { execTimed, heading, loadavg, machine, median, ms, note, percentile, ratio, repoRoot, table, tempDir } from "./common.ts"

/**
 * The containerscale CNI plugin in router mode against the reference ptp + host-local and
 * bridge + host-local: ADD and DEL of a real container namespace, exec to exit, every plugin run
 * inside a throwaway namespace that stands for the node (nsenter, so the host is untouched).
 */

const N = Number(process.env.BENCH_ROUTER ?? 30)
const ours = path.join(repoRoot, "dist/bin/containerscale")
const prefix = `csb${process.pid}`
const nodeNs = `${prefix}-node`
const made: Array<string> = []

const netns = (name: string) => {
  execFileSync("ip", ["netns", "add", name])
  made.push(name)
  return `/run/netns/${name}`
}
const cleanup = () => {
  for (const name of made.splice(0)) {
    try {
      execFileSync("ip", ["netns", "del", name], { stdio: "ignore" })
    } catch {
      // already gone
    }
  }
}
process.on("exit", cleanup)

interface Candidate {
  readonly label: string
  readonly binary: string
  readonly config: (dataDir: string) => object
}

const candidates: ReadonlyArray<Candidate> = [
  {
    label: "containerscale (router)",
    binary: ours,
    config: (dataDir) => ({
      cniVersion: "1.0.0", name: "bench", type: "containerscale", mode: "router",
      ipam: { type: "containerscale-ipam", dataDir, ranges: [[{ subnet: "10.236.64.0/20" }]] }
    })
  },
  {
    label: "ptp + host-local",
    binary: "/usr/lib/cni/ptp",
    config: (dataDir) => ({
      cniVersion: "1.0.0", name: "bench", type: "ptp", mtu: 1280,
      ipam: { type: "host-local", dataDir, ranges: [[{ subnet: "10.236.80.0/20" }]], routes: [{ dst: "0.0.0.0/0" }] }
    })
  },
  {
    label: "bridge + host-local",
    binary: "/usr/lib/cni/bridge",
    config: (dataDir) => ({
      cniVersion: "1.0.0", name: "bench", type: "bridge", bridge: `${prefix}br`, isGateway: true, ipMasq: false,
      ipam: { type: "host-local", dataDir, ranges: [[{ subnet: "10.236.96.0/20" }]] }
    })
  }
]

const run = (c: Candidate, command: "ADD" | "DEL", id: string, ns: string, dataDir: string) =>
  execTimed(
    "nsenter",
    [`--net=/run/netns/${nodeNs}`, c.binary],
    {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      CNI_COMMAND: command,
      CNI_CONTAINERID: id,
      CNI_NETNS: ns,
      CNI_IFNAME: "eth0",
      CNI_ARGS: "",
      CNI_PATH: `${path.join(repoRoot, "dist/bin")}:/usr/lib/cni`
    },
    JSON.stringify(c.config(dataDir))
  ).ms

console.log("# containerscale CNI plugin (router mode) vs ptp and bridge with host-local\n")
console.log(`${machine()}; ${N} ADD + DEL per plugin, interleaved, after 3 warm-ups each`)
netns(nodeNs)
const dirs = new Map(candidates.map((c) => [c, tempDir("router")]))
const times = new Map(candidates.map((c) => [c, { add: [] as Array<number>, del: [] as Array<number> }]))
for (let i = -3; i < N; i++) {
  for (const c of candidates) {
    const ns = netns(`${prefix}-${candidates.indexOf(c)}-${i + 3}`)
    const id = `bench${candidates.indexOf(c)}x${i + 3}`
    const add = run(c, "ADD", id, ns, dirs.get(c)!)
    const del = run(c, "DEL", id, ns, dirs.get(c)!)
    if (i >= 0) {
      times.get(c)!.add.push(add)
      times.get(c)!.del.push(del)
    }
    execFileSync("ip", ["netns", "del", path.basename(ns)])
    made.splice(made.indexOf(path.basename(ns)), 1)
  }
}
const [mine, ptp, bridge] = candidates.map((c) => times.get(c)!)
heading("ADD and DEL, exec to exit (ms)")
console.log(table(
  ["plugin", "ADD p50", "ADD p99", "DEL p50", "DEL p99", "ADD vs ours", "DEL vs ours"],
  candidates.map((c) => {
    const t = times.get(c)!
    return [c.label, ms(median(t.add)), ms(percentile(t.add, 99)), ms(median(t.del)), ms(percentile(t.del, 99)),
      ratio(median(mine!.add), median(t.add)), ratio(median(mine!.del), median(t.del))]
  })
))
note(`\nours / ptp: ADD ${ratio(median(mine!.add), median(ptp!.add))}, DEL ${ratio(median(mine!.del), median(ptp!.del))}; ` +
  `ours / bridge: ADD ${ratio(median(mine!.add), median(bridge!.add))}, DEL ${ratio(median(mine!.del), median(bridge!.del))}`)
cleanup()
for (const dir of dirs.values()) fs.rmSync(dir, { recursive: true, force: true })
console.log(`\nrouter benchmark done (${loadavg()})`)

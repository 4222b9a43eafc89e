import { execFileSync, spawnSync } from "node:child_process"
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

const env = (command: string, id: string, ns: string) => ({
  PATH: process.env.PATH ?? "/usr/bin:/bin",
  CNI_COMMAND: command,
  CNI_CONTAINERID: id,
  CNI_NETNS: ns,
  CNI_IFNAME: "eth0",
  CNI_ARGS: "",
  CNI_PATH: `${path.join(repoRoot, "dist/bin")}:/usr/lib/cni`
})

const run = (c: Candidate, command: "ADD" | "DEL", id: string, ns: string, dataDir: string, tracer: ReadonlyArray<string> = []) =>
  execTimed(tracer[0] ?? "nsenter", [...tracer.slice(1), "nsenter", `--net=/run/netns/${nodeNs}`, c.binary].slice(tracer.length === 0 ? 1 : 0), env(command, id, ns), JSON.stringify(c.config(dataDir))).ms

/**
 * Where one ADD of ours spends its time, from strace timestamps of execve and exit: up to the
 * first iproute2 exec (runtime start, module load, config, IPAM allocate with its fdatasync), each
 * iproute2 exec (fork, exec, the kernel's work), and from the last one to exit (forwarding sysctl,
 * result). VERSION, untraced, is start-up and module load alone.
 */
const phases = (c: Candidate, dataDir: string) => {
  if (spawnSync("strace", ["-V"]).status !== 0) return note("\n(strace is not installed: no phase breakdown)")
  const RUNS = 10
  const rows = new Map<string, Array<number>>()
  const push = (name: string, v: number) => rows.set(name, [...(rows.get(name) ?? []), v])
  const dir = tempDir("router-strace")
  for (let i = 0; i < RUNS; i++) {
    const ns = netns(`${prefix}-t${i}`)
    const out = path.join(dir, `${i}.txt`)
    const total = run(c, "ADD", `trace${i}`, ns, dataDir, ["strace", "-f", "--seccomp-bpf", "-ttt", "-o", out, "-e", "trace=execve,exit_group"])
    run(c, "DEL", `trace${i}`, ns, dataDir)
    execFileSync("ip", ["netns", "del", path.basename(ns)])
    made.splice(made.indexOf(path.basename(ns)), 1)
    const events = fs.readFileSync(out, "utf8").split("\n").map((l) => /^(\d+)\s+([\d.]+) (execve\("([^"]+)"|exit_group|\+\+\+ exited)/.exec(l))
      .filter((m) => m !== null).map((m) => ({ pid: m[1]!, t: Number(m[2]) * 1000, exec: m[4] }))
    const ours = events.find((e) => e.exec === c.binary)!
    const children = [...new Set(events.filter((e) => e.pid !== ours.pid && e.t > ours.t && e.exec !== undefined).map((e) => e.pid))]
    let last = ours.t
    push("exec -> first iproute2 exec (start-up, config, IPAM)", events.find((e) => e.pid === children[0])!.t - ours.t)
    children.forEach((pid, j) => {
      const mine = events.filter((e) => e.pid === pid)
      const what = [...new Set(mine.filter((e) => e.exec !== undefined).map((e) => path.basename(e.exec!)))].join(" + ")
      if (j > 0) push(`  gap before exec ${j + 1}`, mine[0]!.t - last)
      last = mine[mine.length - 1]!.t
      push(`iproute2 exec ${j + 1}: ${what}`, last - mine[0]!.t)
    })
    push("last exec -> exit (sysctl, result)", events.filter((e) => e.pid === ours.pid).at(-1)!.t - last)
    push("total under strace", total)
  }
  fs.rmSync(dir, { recursive: true, force: true })
  const version = Array.from({ length: 10 }, () => execTimed(c.binary, [], { CNI_COMMAND: "VERSION" }, "").ms)
  heading(`Where one ADD of ours goes (medians of ${RUNS} traced ADDs, ms)`)
  console.log(table(["phase", "median"], [...rows].map(([name, v]) => [name, ms(median(v))])))
  note(`\nVERSION untraced (runtime start and module load only): ${ms(median(version))} ms`)
}

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
phases(candidates[0]!, dirs.get(candidates[0]!)!)
cleanup()
for (const dir of dirs.values()) fs.rmSync(dir, { recursive: true, force: true })
console.log(`\nrouter benchmark done (${loadavg()})`)

/**
 * The CNI IPAM binaries side by side: containerscale-ipam (Bun-compiled) against host-local (Go),
 * ADD then DEL on the same pool config, each with its own dataDir; one at a time and 64 at once;
 * then where our exec time goes.
 *
 * Run with `npm run bench` (or `node --conditions=source bench/src/binary.ts`).
 * BENCH_SEQ (default 100) pairs one at a time, BENCH_ROUNDS (default 3) rounds of 64; 0 skips that part.
 */
import { Ipam, resolvePool } from "@containerscale/core"
import { Effect, Result } from "effect"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as c from "./common.ts"

const SUBNET = "10.70.0.0/16"
const NETWORK = "bench"
const SEQ_PAIRS = Number(process.env.BENCH_SEQ ?? 100)
const SEQ_WARMUP = 10
const CONCURRENCY = 64
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const FLOOR_RUNS = 40
const FLOOR_WARMUP = 5
const TRUE = "/bin/true"

c.requireFile(c.ourBinary, "build it with npm run build")
c.requireFile(c.hostLocal, "install it with apt-get install containernetworking-plugins, or set HOST_LOCAL")

interface Target {
  readonly name: string
  readonly binary: string
  readonly dataDir: string
  readonly config: string
}

const ourCopy = c.snapshotOurBinary()

const targets: ReadonlyArray<Target> = [
  { name: "containerscale-ipam", type: "containerscale-ipam" },
  { name: "host-local", type: "host-local" }
].map(({ name, type }) => {
  const dataDir = c.tempDir(name)
  return {
    name,
    binary: type === "host-local" ? c.hostLocal : ourCopy.file,
    dataDir,
    config: c.cniConfig(type, dataDir, NETWORK, SUBNET)
  }
})
const [ours, hl] = targets as [Target, Target]

const sizeMb = (file: string) => `${(fs.statSync(file).size / 2 ** 20).toFixed(1)} MB`

// ---------------------------------------------------------------------------------------------

interface Seq {
  readonly add: Array<number>
  readonly del: Array<number>
  readonly ips: Array<string>
}

const sequential = () => {
  if (SEQ_PAIRS <= 0) return
  c.heading(`Binaries one at a time: ${SEQ_PAIRS} x (ADD, then DEL of the same container), ${SUBNET}, sequential`)
  const out = new Map<string, Seq>(targets.map((t) => [t.name, { add: [], del: [], ips: [] }]))
  for (let i = 0; i < SEQ_WARMUP + SEQ_PAIRS; i++) {
    // alternate who goes first, so that neither always runs right after the other's disk flush
    for (const t of i % 2 === 0 ? targets : [...targets].reverse()) {
      const id = `seq-${i}`
      const add = c.execTimed(t.binary, [], c.cniEnv("ADD", id), t.config)
      const del = c.execTimed(t.binary, [], c.cniEnv("DEL", id), t.config)
      if (i < SEQ_WARMUP) continue
      const s = out.get(t.name)!
      s.add.push(add.ms)
      s.del.push(del.ms)
      s.ips.push(c.resultIp(add.stdout))
    }
  }
  const o = out.get(ours.name)!
  const h = out.get(hl.name)!
  const row = (what: string, a: Array<number>, b: Array<number>) => [
    what,
    c.ms(c.median(a)),
    c.ms(c.percentile(a, 99)),
    c.ms(c.median(b)),
    c.ms(c.percentile(b, 99)),
    c.ratio(c.median(a), c.median(b))
  ]
  const pair = (s: Seq) => s.add.map((v, i) => v + s.del[i]!)
  console.log(c.table(
    ["op", "ours p50", "ours p99", "host-local p50", "host-local p99", "ours / host-local (p50)"],
    [row("ADD", o.add, h.add), row("DEL", o.del, h.del), row("ADD + DEL", pair(o), pair(h))]
  ))
  const same = o.ips.every((ip, i) => ip === h.ips[i])
  c.note(
    `\nAll times in ms, measured from spawn to exit (what a runtime waits for), ${SEQ_WARMUP} warm-up pairs first.\n` +
      `Both handed out the same addresses in the same order: ${same ? "yes" : `NO (ours ${o.ips.slice(0, 3)}..., host-local ${h.ips.slice(0, 3)}...)`}.`
  )
}

// ---------------------------------------------------------------------------------------------

const VERSION_STDIN = JSON.stringify({ cniVersion: "1.0.0" })

/** A trivial program compiled the way scripts/compile-binary compiles ours: the cost of the Bun runtime alone. */
const buildTrivial = (): { file: string; buildMs: number } => {
  const dir = c.tempDir("trivial")
  fs.writeFileSync(path.join(dir, "trivial.ts"), `process.stdout.write("")\n`)
  const file = path.join(dir, "trivial")
  const t0 = c.now()
  const built = spawnSync("bun", ["build", "trivial.ts", "--compile", "--minify", "--bytecode", "--outfile", file], {
    cwd: dir,
    encoding: "utf8"
  })
  if (built.status !== 0) throw new Error(`bun build failed: ${built.stdout}${built.stderr}`)
  return { file, buildMs: c.elapsedMs(t0) }
}

const concurrent = async (trivial: string) => {
  if (ROUNDS <= 0) return
  c.heading(`Binaries ${CONCURRENCY} at a time: ${ROUNDS} rounds of (${CONCURRENCY} ADDs at once, then ${CONCURRENCY} DELs at once)`)
  interface Wave {
    readonly label: string
    readonly binary: string
    readonly command: string
    readonly stdin: string
    readonly check?: (stdouts: ReadonlyArray<string>) => void
  }
  const distinct = (name: string) => (stdouts: ReadonlyArray<string>) => {
    const ips = new Set(stdouts.map(c.resultIp))
    if (ips.size !== CONCURRENCY) throw new Error(`${name}: ${CONCURRENCY} concurrent ADDs got only ${ips.size} distinct addresses`)
  }
  const floors: ReadonlyArray<Wave> = [
    { label: `${TRUE} (harness floor)`, binary: TRUE, command: "NONE", stdin: "" },
    { label: "trivial Bun binary", binary: trivial, command: "NONE", stdin: "" },
    { label: "containerscale-ipam VERSION", binary: ours.binary, command: "VERSION", stdin: VERSION_STDIN },
    { label: "host-local VERSION", binary: hl.binary, command: "VERSION", stdin: VERSION_STDIN }
  ]
  const work = (t: Target): ReadonlyArray<Wave> => [
    { label: `${t.name} ADD`, binary: t.binary, command: "ADD", stdin: t.config, check: distinct(t.name) },
    { label: `${t.name} DEL`, binary: t.binary, command: "DEL", stdin: t.config }
  ]
  const stats = new Map<string, { op: Array<number>; wall: Array<number> }>()
  const runWave = async (w: Wave, round: number) => {
    const t0 = c.now()
    const results = await Promise.all(
      Array.from({ length: CONCURRENCY }, (_, k) => c.execAsync(w.binary, c.cniEnv(w.command, `conc-${round}-${k}`), w.stdin))
    )
    const wall = c.elapsedMs(t0)
    w.check?.(results.map((r) => r.stdout))
    if (round === 0) return // warm-up
    const s = stats.get(w.label) ?? { op: [], wall: [] }
    stats.set(w.label, s)
    s.op.push(...results.map((r) => r.ms))
    s.wall.push(wall)
  }
  for (let round = 0; round <= ROUNDS; round++) {
    if (round > 0) for (const w of floors) await runWave(w, round)
    for (const t of round % 2 === 0 ? targets : [...targets].reverse()) {
      for (const w of work(t)) await runWave(w, round)
    }
  }
  const get = (label: string) => stats.get(label)!
  const row = (label: string) => {
    const s = get(label)
    return [label, c.ms(c.median(s.wall)), c.ms(Math.max(...s.wall)), c.ms(c.median(s.op)), c.ms(c.percentile(s.op, 99))]
  }
  console.log(c.table(
    [`wave of ${CONCURRENCY} at once`, "wall p50", "wall max", "per op p50", "per op p99"],
    [...floors.map((w) => row(w.label)), ...targets.flatMap((t) => work(t).map((w) => row(w.label)))]
  ))
  const ratioRow = (what: string, a: string, b: string) => [
    what,
    c.ratio(c.median(get(a).wall), c.median(get(b).wall)),
    c.ratio(c.median(get(a).op), c.median(get(b).op))
  ]
  console.log()
  console.log(c.table(["ours / host-local", "wall p50", "per op p50"], [
    ratioRow("ADD", `${ours.name} ADD`, `${hl.name} ADD`),
    ratioRow("DEL", `${ours.name} DEL`, `${hl.name} DEL`),
    ratioRow("VERSION (start-up only)", "containerscale-ipam VERSION", "host-local VERSION")
  ]))
  c.note(
    `\nAll times in ms. wall = first spawn to last exit of the wave (${ROUNDS} waves); per op = spawn to exit of each ` +
      `process (${CONCURRENCY * ROUNDS} samples). One warm-up round of ADD and DEL waves first. Every ADD wave got ${CONCURRENCY} distinct addresses, ` +
      `and every DEL wave released them all.\nThe harness spawns from one Node process, so each wave starts its processes ` +
      `over the time of the /bin/true wave.`
  )
  // all released?
  const usage = await Effect.runPromise(
    Ipam.make({ dataDir: ours.dataDir }).usage({
      network: NETWORK,
      pool: Result.getOrThrow(resolvePool({ ranges: [[{ subnet: SUBNET }]] }))
    })
  )
  const hlLeft = fs.readdirSync(path.join(hl.dataDir, NETWORK)).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)).length
  if (usage[0]?.used !== 0 || hlLeft !== 0) {
    throw new Error(`after all DELs, addresses are still held: ours ${usage[0]?.used}, host-local ${hlLeft}`)
  }
}

// ---------------------------------------------------------------------------------------------

const whereTimeGoes = async (trivial: string, buildMs: number) => {
  c.heading("Where the time goes, one at a time (medians, ms)")
  const probes: ReadonlyArray<{ keys: ReadonlyArray<string>; run: (i: number) => ReadonlyArray<number> }> = [
    { keys: ["true"], run: () => [c.execTimed(TRUE, [], {}, "").ms] },
    { keys: ["trivial"], run: () => [c.execTimed(trivial, [], {}, "").ms] },
    ...targets.map((t) => ({
      keys: [`${t.name} VERSION`, `${t.name} ADD`, `${t.name} DEL`],
      run: (i: number) => [
        c.execTimed(t.binary, [], { CNI_COMMAND: "VERSION" }, VERSION_STDIN).ms,
        c.execTimed(t.binary, [], c.cniEnv("ADD", `floor-${i}`), t.config).ms,
        c.execTimed(t.binary, [], c.cniEnv("DEL", `floor-${i}`), t.config).ms
      ]
    }))
  ]
  const journal = path.join(ours.dataDir, NETWORK, "allocations")
  const journalLines = () => (fs.existsSync(journal) ? fs.readFileSync(journal, "latin1").split("\n").length - 1 : 0)
  const linesBefore = journalLines()
  const samples = new Map<string, Array<number>>(probes.flatMap((p) => p.keys.map((k) => [k, []])))
  for (let i = 0; i < FLOOR_WARMUP + FLOOR_RUNS; i++) {
    for (const p of i % 2 === 0 ? probes : [...probes].reverse()) {
      const values = p.run(i)
      if (i >= FLOOR_WARMUP) p.keys.forEach((k, j) => samples.get(k)!.push(values[j]!))
    }
  }

  const linesAfter = journalLines()
  // the library in-process, warm, on a fresh store like the binaries'
  const libDir = c.tempDir("lib")
  const ipam = Ipam.make({ dataDir: libDir })
  const pool = Result.getOrThrow(resolvePool({ ranges: [[{ subnet: SUBNET }]] }))
  const alloc: Array<number> = []
  const rel: Array<number> = []
  for (let i = 0; i < 130; i++) {
    const who = { network: NETWORK, containerId: `lib-${i}`, ifname: "eth0" }
    const a = c.now()
    await Effect.runPromise(ipam.allocate({ ...who, pool }))
    const b = c.now()
    await Effect.runPromise(ipam.release(who))
    if (i >= 30) {
      alloc.push(c.elapsedMs(a, b))
      rel.push(c.elapsedMs(b))
    }
  }
  c.removeDir(libDir)

  const m = (k: string) => c.median(samples.get(k)!)
  const floor = m("true")
  const bun = m("trivial")
  const ourVersion = m(`${ours.name} VERSION`)
  const hlVersion = m(`${hl.name} VERSION`)
  const row = (what: string, v: number, base: number | undefined) => [
    what,
    c.ms(v),
    base === undefined ? "" : `${v >= base ? "+" : "-"}${c.ms(Math.abs(v - base))}`
  ]
  console.log(c.table(["what runs", "median", "added by this step"], [
    row(`${TRUE}: fork + exec + wait, the harness floor`, floor, undefined),
    row(`trivial Bun binary (${sizeMb(trivial)}): Bun runtime start`, bun, floor),
    row(`containerscale-ipam VERSION (${sizeMb(ours.binary)}): + our module load, no store`, ourVersion, bun),
    row("containerscale-ipam ADD: + config, pool, lock, store, fdatasync", m(`${ours.name} ADD`), ourVersion),
    row("containerscale-ipam DEL: + config, lock, store, fdatasync", m(`${ours.name} DEL`), ourVersion),
    row("  the same allocate in-process (library, warm, Node)", c.median(alloc), undefined),
    row("  the same release in-process (library, warm, Node)", c.median(rel), undefined),
    row(`host-local VERSION (${sizeMb(c.hostLocal)}): Go runtime start`, hlVersion, floor),
    row("host-local ADD: + config, lock, scan, write one file (no fsync)", m(`${hl.name} ADD`), hlVersion),
    row("host-local DEL: + config, lock, read every file, remove one", m(`${hl.name} DEL`), hlVersion)
  ]))
  c.note(
    `\nExec rows: ${FLOOR_RUNS} runs each after ${FLOOR_WARMUP} warm-ups, interleaved (so load from elsewhere hits all rows alike).` +
      `\nThe trivial Bun binary is process.stdout.write(""), built in ${(buildMs / 1000).toFixed(1)} s with ` +
      `bun build --compile --minify --bytecode.` +
      `\nOur journal held ${linesBefore} to ${linesAfter} lines meanwhile (no address live between pairs): each exec replays ` +
      `them all, as the journal is compacted only past 2 x live + 64 lines.`
  )
  phases()
}

/**
 * Inside one ADD: syscall timestamps from strace (seccomp-filtered, so only the traced calls stop
 * the process) mark the phases: exec -> stdin read (runtime start + module load) -> open of the
 * lock file (config decode, pool) -> fdatasync (lock, store read, allocate, append) -> result
 * write -> exit.
 */
const phases = () => {
  if (spawnSync("strace", ["-V"]).status !== 0) {
    c.note("\n(strace is not installed: no phase breakdown)")
    return
  }
  const RUNS = 15
  const names = [
    "exec -> stdin read (runtime start, module load)",
    "stdin read -> lock file open (config decode, pool)",
    "lock file open -> flock (ours: bun:ffi set-up)",
    "flock -> fdatasync (store read, allocate, append)",
    "fdatasync",
    "fdatasync (host-local: flock) -> result written",
    "result written -> exited (teardown)",
    "total under strace"
  ] as const
  const result = new Map<string, Map<string, Array<number>>>()
  const dir = c.tempDir("strace")
  for (let i = 0; i < RUNS + 2; i++) {
    for (const t of targets) {
      const out = path.join(dir, `${t.name}-${i}.txt`)
      const args = ["-f", "--seccomp-bpf", "-ttt", "-T", "-o", out, "-e", "trace=execve,read,recvfrom,openat,flock,fdatasync,write,writev,pwritev2,sendto,sendmsg,exit_group", t.binary]
      c.execTimed("strace", args, c.cniEnv("ADD", `strace-${i}`), t.config)
      c.execTimed(t.binary, [], c.cniEnv("DEL", `strace-${i}`), t.config)
      if (i < 2) continue
      const lines = fs.readFileSync(out, "utf8").split("\n")
      const at = (re: RegExp) => {
        const l = lines.find((x) => re.test(x))
        return l === undefined ? undefined : Number(l.split(/\s+/)[1])
      }
      const pid = lines[0]!.split(/\s+/)[0] // strace pads pids: "1813  1795818715.588322 execve(..."
      const exec = at(/ execve\(/)!
      const stdin = at(/ (read|recvfrom)\(0, /)
      const lock = at(/ openat\(.*\/lock"/)
      const flock = at(/ flock\(/)
      const syncLine = lines.find((x) => / fdatasync\(/.test(x))
      const sync = syncLine === undefined ? undefined : Number(syncLine.split(/\s+/)[1])
      // the call's own duration, or (when another thread interrupted the line) its "resumed" line
      const syncEnd = syncLine === undefined
        ? undefined
        : /<([\d.]+)>$/.test(syncLine)
        ? sync! + Number(/<([\d.]+)>$/.exec(syncLine)![1])
        : at(/<\.\.\. fdatasync resumed>/)
      // the harness's stdout is a socket (libuv): Bun sends the result with sendto, Go writes it
      const written = at(/^\d+\s+[\d.]+ (write|writev|pwritev2|sendto|sendmsg)\(\d+, .*"\{/)
      const exited = at(new RegExp(`^${pid}\\s.*\\+\\+\\+ exited`))
      const s = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined ? Number.NaN : (b - a) * 1000)
      const afterSync = syncEnd ?? flock
      const v = [
        s(exec, stdin),
        s(stdin, lock),
        s(lock, flock),
        s(flock, sync),
        s(sync, syncEnd),
        s(afterSync, written),
        s(written, exited),
        s(exec, exited)
      ]
      const byPhase = result.get(t.name) ?? new Map<string, Array<number>>()
      result.set(t.name, byPhase)
      names.forEach((n, j) => {
        const list = byPhase.get(n) ?? []
        byPhase.set(n, list)
        if (!Number.isNaN(v[j]!)) list.push(v[j]!)
      })
    }
  }
  c.removeDir(dir)
  const cell = (t: Target, n: string) => {
    const list = result.get(t.name)?.get(n) ?? []
    return list.length === 0 ? "-" : c.ms(c.median(list))
  }
  console.log()
  console.log(c.table(["phase of one ADD (strace timestamps)", ...targets.map((t) => t.name)], names.map((n) => [n, ...targets.map((t) => cell(t, n))])))
  c.note(
    `\nMedians of ${RUNS} traced ADDs (each followed by an untraced DEL); host-local never calls fdatasync. strace adds a little` +
      `\nto every traced call, so the total runs above the untraced ADD.`
  )
}

console.log(`# containerscale-ipam vs host-local, binary benchmark\n\n${c.machine()}`)
console.log(`ours: ${ourCopy.describe}\nhost-local: ${c.hostLocal}`)
const started = c.now()
const trivial = buildTrivial()
sequential()
await concurrent(trivial.file)
await whereTimeGoes(trivial.file, trivial.buildMs)
c.cleanupAll()
console.log(`\nbinary benchmark done in ${(c.elapsedMs(started) / 1000).toFixed(1)} s (${c.loadavg()})`)

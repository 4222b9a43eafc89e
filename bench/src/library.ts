/**
 * The IPAM library in-process: allocate + release latency by strategy and occupancy of a /16,
 * then host-local's worst case (a 99.9 % full /16 whose free addresses lie a full lap away from
 * the "last handed out" pointer) for our library, our binary and host-local.
 *
 * Run with `npm run bench` (or `node --conditions=source bench/src/library.ts`).
 * BENCH_PAIRS (default 300) sets the number of measured pairs per case.
 */
import { Ipam, type Pool, resolvePool, type Strategy } from "@containerscale/core"
import { Effect, Result } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as c from "./common.ts"

const SUBNET = "10.60.0.0/16"
const NETWORK = "bench"
const PAIRS = Number(process.env.BENCH_PAIRS ?? 300)
const WARMUP = 30
/** per case: stop measuring after this long (but keep at least MIN_PAIRS) */
const CASE_BUDGET_MS = 4000
const MIN_PAIRS = 50
const LEVELS = [0, 50, 90, 99] as const
const STRATEGIES: ReadonlyArray<Strategy> = ["sequential", "random", "dense"]

const run = <A, E>(effect: Effect.Effect<A, E>): Promise<A> => Effect.runPromise(effect)

const poolOf = (strategy: Strategy): Pool =>
  Result.getOrThrow(resolvePool({ ranges: [[{ subnet: SUBNET }]], strategy }))

const usable = c.usableOf(SUBNET)
const setKey = poolOf("sequential").rangeSets[0]!.key

/** Which offsets (from .0.2) are taken at an occupancy, as each strategy leaves a pool that only grew. */
const layout = (strategy: Strategy, count: number, seed: number): Array<number> => {
  if (strategy !== "random") return Array.from({ length: count }, (_, i) => i) // one block from the start
  const all = Uint32Array.from({ length: usable.count }, (_, i) => i)
  const random = c.prng(seed)
  for (let i = 0; i < count; i++) {
    const j = i + Math.floor(random() * (usable.count - i))
    const t = all[i]!
    all[i] = all[j]!
    all[j] = t
  }
  return Array.from(all.subarray(0, count))
}

interface PairSamples {
  readonly allocate: Array<number>
  readonly release: Array<number>
  readonly pair: Array<number>
}

const measurePairs = async (
  ipam: Ipam["Service"],
  dataDir: string,
  pool: Pool,
  prefix: string,
  before?: () => Promise<void>
): Promise<PairSamples> => {
  const s: PairSamples = { allocate: [], release: [], pair: [] }
  const started = c.now()
  for (let i = 0; i < WARMUP + PAIRS; i++) {
    if (i >= WARMUP + MIN_PAIRS && c.elapsedMs(started) > CASE_BUDGET_MS) break
    if (before !== undefined) await before()
    const who = { network: NETWORK, dataDir, containerId: `${prefix}-${i}`, ifname: "eth0" }
    const t0 = c.now()
    await run(ipam.allocate({ ...who, pool }))
    const t1 = c.now()
    await run(ipam.release(who))
    const t2 = c.now()
    if (i < WARMUP) continue
    s.allocate.push(c.elapsedMs(t0, t1))
    s.release.push(c.elapsedMs(t1, t2))
    s.pair.push(c.elapsedMs(t0, t2))
  }
  return s
}

// ---------------------------------------------------------------------------------------------

const fillThroughLibrary = async () => {
  c.heading("Library: filling an empty /16 by calling allocate in a loop")
  const COUNT = 2000
  const rows: Array<Array<string>> = []
  for (const strategy of STRATEGIES) {
    const dataDir = c.tempDir("fill")
    const ipam = Ipam.make({ dataDir, random: c.prng(7) })
    const pool = poolOf(strategy)
    const t0 = c.now()
    for (let i = 0; i < COUNT; i++) {
      await run(ipam.allocate({ network: NETWORK, pool, containerId: `fill-${i}`, ifname: "eth0" }))
    }
    const total = c.elapsedMs(t0)
    rows.push([strategy, String(COUNT), c.ms(total), c.ms(total / COUNT), `${((total / COUNT) * usable.count * 0.99 / 1000).toFixed(0)} s`])
    c.removeDir(dataDir)
  }
  console.log(c.table(["strategy", "allocations", "total ms", "ms / allocate", "99 % of a /16 at this rate"], rows))
  c.note(
    "\nEvery allocate is its own transaction (flock, read what the journal gained, append one line,\n" +
      "fdatasync). At these rates a loop needs the last column's time per strategy and level (dense more:\n" +
      "its scan grows with the pool, see below). The occupancy cases below therefore write the same journal\n" +
      "directly (one block from .0.2 for sequential and dense, as both leave a pool that only grew; a seeded\n" +
      "uniform sample for random) and let the library load it: 'fill' is that write plus the library's\n" +
      "first (cold) load, which replays the whole journal, as every exec of the CNI binary does."
  )
}

const byOccupancy = async () => {
  c.heading(`Library: allocate + release of a fresh attachment, by occupancy of ${SUBNET} (${usable.count} usable)`)
  const rows: Array<Array<string>> = []
  const baseline = new Map<Strategy, number>()
  for (const level of LEVELS) {
    for (const strategy of STRATEGIES) {
      const count = Math.round((usable.count * level) / 100)
      const dataDir = c.tempDir("occ")
      const entries = layout(strategy, count, 1000 + level).map((o): c.Entry => ({
        ip: c.intToIp(usable.first + o),
        containerId: `fill-${o}`,
        ifname: "eth0"
      }))
      const pool = poolOf(strategy)
      const ipam = Ipam.make({ dataDir, random: c.prng(level + 1) })
      const t0 = c.now()
      if (count > 0) c.writeOurStore(dataDir, NETWORK, setKey, entries)
      const written = c.elapsedMs(t0)
      const t1 = c.now()
      await run(ipam.leases({ network: NETWORK, dataDir, pool, containerId: "nobody", ifname: "eth0" }))
      const loaded = c.elapsedMs(t1)
      const usage = await run(ipam.usage({ network: NETWORK, dataDir, pool }))
      if (usage[0]?.used !== count || usage[0].size !== BigInt(usable.count)) {
        throw new Error(`expected ${count} of ${usable.count} addresses in use, the library sees ${usage[0]?.used} of ${usage[0]?.size}`)
      }
      const s = await measurePairs(ipam, dataDir, pool, `m-${strategy}-${level}`)
      const p50 = c.median(s.pair)
      if (level === 0) baseline.set(strategy, p50)
      rows.push([
        strategy,
        `${level} %`,
        String(count),
        `${c.ms(written + loaded)} (${c.ms(loaded)})`,
        String(s.pair.length),
        c.ms(c.median(s.allocate)),
        c.ms(c.percentile(s.allocate, 99)),
        c.ms(c.median(s.release)),
        c.ms(c.percentile(s.release, 99)),
        c.ms(p50),
        c.ms(c.percentile(s.pair, 99)),
        c.ratio(p50, baseline.get(strategy)!)
      ])
      c.removeDir(dataDir)
    }
  }
  console.log(c.table([
    "strategy",
    "occupancy",
    "in use",
    "fill ms (cold load)",
    "n",
    "alloc p50",
    "alloc p99",
    "release p50",
    "release p99",
    "pair p50",
    "pair p99",
    "pair p50 vs 0 %"
  ], rows))
  c.note("\nAll times in ms. n = measured pairs (after 30 warm-up pairs); a case stops early after ~4 s.")
}

// ---------------------------------------------------------------------------------------------

/** exec pairs (after one warm-up pair) on the worst-case layout: each host-local pair takes seconds */
const SAMPLES_OURS = Number(process.env.BENCH_WORST_OURS ?? 8)
const SAMPLES_HOST_LOCAL = Number(process.env.BENCH_WORST_HOST_LOCAL ?? 5)
/**
 * Both worst-case stores live on tmpfs by default. 65k freshly written files on the disk get written
 * back after 30 s (vm.dirty_expire_centisecs), and removing them afterwards took 36 s in one run;
 * host-local's ADD/DEL timings were the same on tmpfs and on the disk (it never fsyncs and reads
 * from the page cache either way), and our fdatasync (~0.4 ms) is noise next to seconds.
 */
const WORST_BASE = process.env.BENCH_WORST_DIR ?? (fs.existsSync("/dev/shm") ? "/dev/shm" : os.tmpdir())

const worstCase = async () => {
  // Free: the 65 addresses .0.2-.0.66. Taken: everything from .0.67 to .255.254. Last handed out:
  // .0.67, right after the free block, so a sequential scan walks the whole /16 (65,467 taken
  // addresses), wraps, and only then finds .0.2. (With the pointer literally at the end, the wrap
  // would reach .0.2 in one step: the pointer has to sit just past the free block for a full lap.)
  const FREE = 65
  const pointer = c.intToIp(usable.first + FREE)
  const firstFree = c.intToIp(usable.first)
  const entries: Array<c.Entry> = []
  for (let n = usable.first + FREE; n <= usable.last; n++) entries.push({ ip: c.intToIp(n), containerId: `fill-${n}`, ifname: "eth0" })
  const occupancy = ((entries.length / usable.count) * 100).toFixed(2)
  c.heading(
    `Worst case for sequential: ${SUBNET} ${occupancy} % full (${entries.length} taken, ${FREE} free at ` +
      `${firstFree}-${c.intToIp(usable.first + FREE - 1)}), last handed out ${pointer}`
  )
  const pool = poolOf("sequential")

  // ours: one store, used by the library in-process and then by the binary
  const ourDir = c.tempDir("worst-ours", WORST_BASE)
  let t0 = c.now()
  c.writeOurStore(ourDir, NETWORK, setKey, entries, pointer)
  const ourWrite = c.elapsedMs(t0)
  const ipam = Ipam.make({ dataDir: ourDir })
  t0 = c.now()
  await run(ipam.leases({ network: NETWORK, dataDir: ourDir, pool, containerId: "nobody", ifname: "eth0" }))
  const ourLoad = c.elapsedMs(t0)
  const usage = await run(ipam.usage({ network: NETWORK, dataDir: ourDir, pool }))
  if (usage[0]?.used !== entries.length) throw new Error(`the library sees ${usage[0]?.used} addresses in use`)
  const filler = { network: NETWORK, dataDir: ourDir, containerId: `fill-${usable.first + FREE}`, ifname: "eth0" }
  /** puts the sequential pointer back on .0.67: free it and take it again by request */
  const resetOurs = async () => {
    await run(ipam.release(filler))
    await run(ipam.allocate({ ...filler, pool, requested: [pointer] }))
  }
  await resetOurs()
  const probe = await run(ipam.allocate({ network: NETWORK, dataDir: ourDir, pool, containerId: "probe", ifname: "eth0" }))
  if (probe[0]?.ip !== firstFree) throw new Error(`expected the scan to wrap to ${firstFree}, got ${probe[0]?.ip}`)
  await run(ipam.release({ network: NETWORK, dataDir: ourDir, containerId: "probe", ifname: "eth0" }))
  const lib = await measurePairs(ipam, ourDir, pool, "w", resetOurs)

  interface ExecSamples {
    readonly add: Array<number>
    readonly del: Array<number>
    readonly pair: Array<number>
  }
  const execPairs = async (binary: string, config: string, samples: number, reset: () => Promise<void> | void): Promise<ExecSamples> => {
    const s: ExecSamples = { add: [], del: [], pair: [] }
    for (let i = 0; i <= samples; i++) {
      await reset()
      const id = `x-${i}`
      const add = c.execTimed(binary, [], c.cniEnv("ADD", id), config)
      const got = c.resultIp(add.stdout)
      if (got !== firstFree) throw new Error(`${binary}: expected ${firstFree}, got ${got}`)
      const del = c.execTimed(binary, [], c.cniEnv("DEL", id), config)
      if (i === 0) continue // warm-up
      s.add.push(add.ms)
      s.del.push(del.ms)
      s.pair.push(add.ms + del.ms)
    }
    return s
  }

  let ourExec: ExecSamples | undefined
  if (fs.existsSync(c.ourBinary)) {
    const copy = c.snapshotOurBinary()
    ourExec = await execPairs(copy.file, c.cniConfig("containerscale-ipam", ourDir, NETWORK, SUBNET), SAMPLES_OURS, resetOurs)
    c.removeDir(path.dirname(copy.file))
  }
  c.removeDir(ourDir)

  const hlDir = c.tempDir("worst-hl", WORST_BASE)
  t0 = c.now()
  c.writeHostLocalStore(hlDir, NETWORK, entries, pointer)
  const hlWrite = c.elapsedMs(t0)
  const hl = await execPairs(
    c.hostLocal,
    c.cniConfig("host-local", hlDir, NETWORK, SUBNET),
    SAMPLES_HOST_LOCAL,
    () => c.setHostLocalLast(hlDir, NETWORK, pointer)
  )
  t0 = c.now()
  c.removeDir(hlDir)
  const hlRemove = c.elapsedMs(t0)

  const hlPair = c.median(hl.pair)
  const row = (what: string, s: { add: Array<number>; del: Array<number>; pair: Array<number> }) => [
    what,
    String(s.pair.length),
    c.ms(c.median(s.add)),
    c.ms(c.percentile(s.add, 99)),
    c.ms(c.median(s.del)),
    c.ms(c.percentile(s.del, 99)),
    c.ms(c.median(s.pair)),
    c.ms(c.percentile(s.pair, 99)),
    c.ratio(c.median(s.pair), hlPair)
  ]
  const rows = [row("our library, in-process (sequential)", { add: lib.allocate, del: lib.release, pair: lib.pair })]
  if (ourExec !== undefined) rows.push(row("containerscale-ipam binary, ADD + DEL exec", ourExec))
  rows.push(row("host-local binary, ADD + DEL exec", hl))
  console.log(c.table(["who", "n", "ADD p50", "ADD p99", "DEL p50", "DEL p99", "pair p50", "pair p99", "pair p50 / host-local"], rows))
  c.note(
    `\nAll times in ms; every ADD returned ${firstFree} (the scan wrapped); the pointer is put back on ${pointer} before each pair.\n` +
      `Set-up: our journal written in ${c.ms(ourWrite)} ms and loaded cold by the library in ${c.ms(ourLoad)} ms; ` +
      `host-local's ${entries.length} files written in ${c.ms(hlWrite)} ms, removed in ${c.ms(hlRemove)} ms.` +
      (ourExec === undefined ? `\n(${c.ourBinary} is missing: run npm run build for the binary row.)` : "") +
      `\nBoth stores in ${WORST_BASE}. With a handful of exec pairs, p99 is the slowest sample.`
  )
}

console.log(`# containerscale IPAM library benchmark\n\n${c.machine()}`)
const started = c.now()
await fillThroughLibrary()
await byOccupancy()
await worstCase()
console.log(`\nlibrary benchmark done in ${(c.elapsedMs(started) / 1000).toFixed(1)} s (${c.loadavg()})`)

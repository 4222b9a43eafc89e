import { defaultIpamOptions, Ip, Ipam, IpamStore, type PoolConfig, resolvePool } from "@containerscale/core"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { layerIpamMemory, makeMemoryStore } from "../src/ipam/memoryStore.ts"
import { type Change, type StoreState } from "../src/ipam/state.ts"

/**
 * The Ipam on the in-memory store (memoryStore.ts): the strategies, release, GC and usage with
 * nothing on disk, the store semantics both backends share, and the same leases from the disk
 * journal and the memory store for the same calls.
 */

let root: string
beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "cs-ipam-memory-"))
})
afterAll(() => {
  fs.rmSync(root, { recursive: true, force: true })
})

/** The memory tests name a data directory that must never appear. */
const NO_DISK = path.join(os.tmpdir(), `cs-ipam-memory-never-${process.pid}`)

const poolOf = (config: PoolConfig) => Result.getOrThrow(resolvePool(config))

const mulberry32 = (seed: number) => () => {
  let t = (seed += 0x6d2b79f5)
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

const ipsOf = (ipam: Ipam["Service"], network: string, pool: ReturnType<typeof poolOf>) => ({
  add: (id: string, ifname = "eth0") =>
    ipam.allocate({ network, pool, containerId: id, ifname }).pipe(Effect.map((l) => l.map((x) => x.ip).join(" "))),
  del: (id: string, ifname = "eth0") => ipam.release({ network, containerId: id, ifname })
})

describe("the Ipam on the memory store", () => {
  it.effect("sequential continues after the last address handed out and wraps around", () =>
    Effect.gen(function*() {
      const ipam = yield* Ipam
      const { add, del } = ipsOf(ipam, "seq", poolOf({ subnet: "10.9.0.0/29", strategy: "sequential" }))
      assert.deepStrictEqual([yield* add("a"), yield* add("b"), yield* add("c")], ["10.9.0.2", "10.9.0.3", "10.9.0.4"])
      assert.deepStrictEqual(yield* del("a"), ["10.9.0.2"])
      assert.strictEqual(yield* add("d"), "10.9.0.5")
      assert.strictEqual(yield* add("e"), "10.9.0.6")
      assert.strictEqual(yield* add("f"), "10.9.0.2")
      const exhausted = yield* Effect.flip(add("g"))
      assert.strictEqual(exhausted._tag, "PoolExhausted")
      assert.strictEqual(exhausted.cniCode, 11)
      assert.isFalse(fs.existsSync(NO_DISK))
    }).pipe(Effect.provide(layerIpamMemory({ dataDir: NO_DISK }))))

  it.effect("dense hands out the lowest free address, across ranges", () =>
    Effect.gen(function*() {
      const ipam = yield* Ipam
      const pool = poolOf({ ranges: [[{ subnet: "10.9.1.0/29" }, { subnet: "10.9.2.0/29" }]], strategy: "dense", exclude: ["10.9.1.3"] })
      const { add, del } = ipsOf(ipam, "dense", pool)
      assert.deepStrictEqual([yield* add("a"), yield* add("b"), yield* add("c")], ["10.9.1.2", "10.9.1.4", "10.9.1.5"])
      yield* del("a")
      assert.strictEqual(yield* add("d"), "10.9.1.2")
      assert.strictEqual(yield* add("e"), "10.9.1.6")
      assert.strictEqual(yield* add("f"), "10.9.2.2")
      assert.isFalse(fs.existsSync(NO_DISK))
    }).pipe(Effect.provide(layerIpamMemory({ dataDir: NO_DISK }))))

  it.effect("random fills the pool with distinct free addresses, the same ones for the same seed", () =>
    Effect.gen(function*() {
      const pool = poolOf({ subnet: "10.9.3.0/27", strategy: "random" }) // .2-.30 usable: 29
      const fill = (ipam: Ipam["Service"]) =>
        Effect.gen(function*() {
          const { add } = ipsOf(ipam, "rnd", pool)
          const ips: Array<string> = []
          for (let i = 0; i < 29; i++) ips.push(yield* add(`c${i}`))
          assert.strictEqual((yield* Effect.flip(add("last")))._tag, "PoolExhausted")
          return ips
        })
      const ips = yield* fill(Ipam.make({ dataDir: NO_DISK, random: mulberry32(7) }, makeMemoryStore()))
      assert.deepStrictEqual(
        [...ips].sort((a, b) => Number(Ip.parseAddress(a).pipe(Result.getOrThrow).value - Ip.parseAddress(b).pipe(Result.getOrThrow).value)),
        Array.from({ length: 29 }, (_, i) => `10.9.3.${i + 2}`)
      )
      assert.notDeepEqual(ips, Array.from({ length: 29 }, (_, i) => `10.9.3.${i + 2}`), "random handed out in order")
      assert.deepStrictEqual(yield* fill(Ipam.make({ dataDir: NO_DISK, random: mulberry32(7) }, makeMemoryStore())), ips)
      assert.isFalse(fs.existsSync(NO_DISK))
    }))

  it.effect("release frees every address of the attachment, once; GC keeps exactly the valid attachments; usage counts", () =>
    Effect.gen(function*() {
      const ipam = yield* Ipam
      const network = "dual"
      const pool = poolOf({ ranges: [[{ subnet: "10.9.4.0/28" }], [{ subnet: "fd00:9:4::/124" }]] })
      for (const id of ["a", "b", "c"]) {
        for (const ifname of ["eth0", "eth1"]) yield* ipam.allocate({ network, pool, containerId: id, ifname })
      }
      const again = yield* ipam.allocate({ network, pool, containerId: "a", ifname: "eth0" })
      assert.deepStrictEqual(again.map((l) => l.address), ["10.9.4.2/28", "fd00:9:4::2/124"])
      assert.deepStrictEqual(yield* ipam.leases({ network, pool, containerId: "a", ifname: "eth0" }), again)

      assert.deepStrictEqual([...(yield* ipam.release({ network, containerId: "a", ifname: "eth1" }))].sort(), ["10.9.4.3", "fd00:9:4::3"])
      assert.deepStrictEqual(yield* ipam.release({ network, containerId: "a", ifname: "eth1" }), [])
      assert.deepStrictEqual(yield* ipam.release({ network, containerId: "nobody", ifname: "eth0" }), [])

      const released = yield* ipam.gc({ network, valid: [{ containerId: "a", ifname: "eth0" }, { containerId: "c", ifname: "eth1" }] })
      assert.deepStrictEqual(released.map((r) => `${r.containerId}/${r.ifname} ${r.ip}`).sort(), [
        "b/eth0 10.9.4.4",
        "b/eth0 fd00:9:4::4",
        "b/eth1 10.9.4.5",
        "b/eth1 fd00:9:4::5",
        "c/eth0 10.9.4.6",
        "c/eth0 fd00:9:4::6"
      ])
      const usage = yield* ipam.usage({ network, pool })
      assert.deepStrictEqual(
        usage.map((u) => ({ rangeSet: u.rangeSet, family: u.family, ranges: u.ranges, size: u.size, used: u.used })),
        [
          { rangeSet: 0, family: 4, ranges: ["10.9.4.1-10.9.4.14"], size: 13n, used: 2 },
          { rangeSet: 1, family: 6, ranges: ["fd00:9:4::1-fd00:9:4::f"], size: 14n, used: 2 }
        ]
      )
      assert.deepStrictEqual(usage[0]!.allocations, [
        { containerId: "a", ifname: "eth0", ip: "10.9.4.2" },
        { containerId: "c", ifname: "eth1", ip: "10.9.4.7" }
      ])
      assert.strictEqual((yield* ipam.gc({ network, valid: [] })).length, 4)
      assert.deepStrictEqual((yield* ipam.usage({ network, pool })).map((u) => u.used), [0, 0])
      assert.isFalse(fs.existsSync(NO_DISK))
    }).pipe(Effect.provide(layerIpamMemory({ dataDir: NO_DISK }))))

  it.effect("concurrent allocations never share an address", () =>
    Effect.gen(function*() {
      const ipam = yield* Ipam
      const pool = poolOf({ subnet: "10.9.5.0/24" })
      const ips = yield* Effect.all(
        Array.from({ length: 50 }, (_, i) => ipam.allocate({ network: "conc", pool, containerId: `c${i}`, ifname: "eth0" })),
        { concurrency: "unbounded" }
      )
      assert.strictEqual(new Set(ips.map((l) => l[0]!.ip)).size, 50)
    }).pipe(Effect.provide(layerIpamMemory({ dataDir: NO_DISK }))))

  it.effect("each build of the layer starts empty", () =>
    Effect.gen(function*() {
      const pool = poolOf({ subnet: "10.9.6.0/24" })
      const first = Effect.gen(function*() {
        return (yield* (yield* Ipam).allocate({ network: "n", pool, containerId: "a", ifname: "eth0" }))[0]!.ip
      })
      assert.strictEqual(yield* first.pipe(Effect.provide(layerIpamMemory())), "10.9.6.2")
      assert.strictEqual(yield* first.pipe(Effect.provide(layerIpamMemory())), "10.9.6.2")
    }))
})

// ---------------------------------------------------------------------------------------------
// the store semantics, on both backends

const holder = (containerId: string, value: bigint): Change => ({
  op: "+",
  holder: { family: 4, value, containerId, ifname: "eth0", setKey: "k" }
})
const add = (...changes: Array<Change>) => (_: StoreState) => Result.succeed({ value: undefined, changes })
const held = (state: StoreState) => Result.succeed({ value: [...state.byCode.values()].map((h) => h.containerId).sort(), changes: [] })
const failing = (_: StoreState) => Result.fail("refused" as const)

describe("IpamStore semantics are the same on disk and in memory", () => {
  for (const backend of ["disk", "memory"] as const) {
    it.effect(`${backend}: create, missing stores, failed transactions`, () =>
      Effect.gen(function*() {
        const store = backend === "disk" ? IpamStore.disk : makeMemoryStore()
        const base = fs.mkdtempSync(path.join(root, `${backend}-`))
        const dir = (name: string) => path.join(base, name)
        const o = (create: boolean) => ({ lockTimeout: defaultIpamOptions.lockTimeout, create })

        // without create, a missing store reads as empty and what the transaction returns is not recorded
        yield* store.transact(dir("missing"), o(false), add(holder("x", 1n)))
        assert.deepStrictEqual(yield* store.transact(dir("missing"), o(false), held), [])
        // with create, changes are recorded; a failed transaction records nothing
        yield* store.transact(dir("s"), o(true), add(holder("a", 1n), holder("b", 2n)))
        assert.strictEqual(yield* Effect.flip(store.transact(dir("s"), o(true), failing)), "refused")
        assert.deepStrictEqual(yield* store.transact(dir("s"), o(false), held), ["a", "b"])
        yield* store.transact(dir("s"), o(false), () => Result.succeed({ value: 0, changes: [{ op: "-", family: 4, value: 1n }] }))
        assert.deepStrictEqual(yield* store.transact(dir("s"), o(false), held), ["b"])
        // a create transaction that fails still leaves the store there: later changes are recorded
        assert.strictEqual(yield* Effect.flip(store.transact(dir("t"), o(true), failing)), "refused")
        yield* store.transact(dir("t"), o(false), add(holder("c", 3n)))
        assert.deepStrictEqual(yield* store.transact(dir("t"), o(false), held), ["c"])
        // each directory is its own store
        assert.deepStrictEqual(yield* store.transact(dir("u"), o(false), held), [])
        assert.strictEqual(fs.existsSync(dir("s")), backend === "disk")
      }))
  }
})

// ---------------------------------------------------------------------------------------------
// the same calls, the same answers

const POOLS: ReadonlyArray<PoolConfig> = [
  { ranges: [[{ subnet: "10.30.0.0/27" }], [{ subnet: "fd00:30::/123" }]], strategy: "sequential" },
  { ranges: [[{ subnet: "10.31.0.0/28" }, { subnet: "10.31.1.0/28" }]], strategy: "dense", exclude: ["10.31.0.5"] },
  { ranges: [[{ subnet: "10.32.0.0/27" }], [{ subnet: "fd00:32::/122" }]], strategy: "random" }
]

const ATTACHMENTS = Array.from({ length: 64 }, (_, k) => ({ containerId: `c${k >> 1}`, ifname: `eth${k & 1}` }))

/** A fixed sequence of calls on every pool; each answer (value or error) as JSON. */
const script = (ipam: Ipam["Service"], networkOf: (i: number) => string, seed: number, steps: number) =>
  Effect.gen(function*() {
    const next = mulberry32(seed)
    const pick = (n: number) => Math.floor(next() * n)
    const answers: Array<string> = []
    for (let step = 0; step < steps; step++) {
      const i = pick(POOLS.length)
      const network = networkOf(i)
      const pool = poolOf(POOLS[i]!)
      const attachment = ATTACHMENTS[pick(ATTACHMENTS.length)]!
      const roll = pick(100)
      const call: Effect.Effect<unknown, { _tag: string; message: string }> = roll < 60
        ? ipam.allocate({ network, pool, ...attachment })
        : roll < 68
        ? ipam.allocate({ network, pool, ...attachment, requested: [`${POOLS[i]!.ranges![0]![0]!.subnet.replace(/0\/\d+$/, "")}${2 + pick(12)}`] })
        : roll < 86
        ? ipam.release({ network, ...attachment })
        : roll < 89
        ? ipam.gc({ network, valid: ATTACHMENTS.filter(() => next() < 0.8) })
        : roll < 95
        ? ipam.leases({ network, pool, ...attachment })
        : ipam.usage({ network, pool })
      const outcome = yield* Effect.result(call)
      answers.push(JSON.stringify(
        Result.isSuccess(outcome) ? { ok: outcome.success } : { err: outcome.failure._tag, message: outcome.failure.message },
        (_k, v) => (typeof v === "bigint" ? v.toString() : v)
      ))
    }
    for (const [i, config] of POOLS.entries()) {
      answers.push(JSON.stringify(yield* ipam.usage({ network: networkOf(i), pool: poolOf(config) }), (_k, v) => (typeof v === "bigint" ? v.toString() : v)))
    }
    return answers
  })

describe("the disk journal and the memory store give the same answers", () => {
  it.live("for the same 600 calls on sequential, dense and random pools, across compaction and a replay from disk", () =>
    Effect.gen(function*() {
      const dataDir = fs.mkdtempSync(path.join(root, "same-"))
      const disk = Ipam.make({ dataDir, random: mulberry32(42) })
      const memoryStore = makeMemoryStore()
      const memory = Ipam.make({ dataDir, random: mulberry32(42) }, memoryStore)
      const networkOf = (i: number) => `net${i}`
      const onDisk = yield* script(disk, networkOf, 1, 600)
      const inMemory = yield* script(memory, networkOf, 1, 600)
      assert.strictEqual(onDisk.length, inMemory.length)
      for (const [k, answer] of onDisk.entries()) assert.strictEqual(inMemory[k], answer, `call ${k}`)
      assert.isTrue(onDisk.some((a) => a.includes("PoolExhausted")), "the script never exhausted a pool")
      assert.isTrue(onDisk.some((a) => a.includes("AddressInUse")), "the script never requested a held address")

      // the journal was compacted on the way (L lines), and a copy read from scratch goes on like memory does
      const journal = fs.readFileSync(path.join(dataDir, "net0", "allocations"), "utf8")
      assert.match(journal, /^L /m)
      for (const i of POOLS.keys()) fs.cpSync(path.join(dataDir, `net${i}`), path.join(dataDir, `copy${i}`), { recursive: true })
      const fromCopy = yield* script(Ipam.make({ dataDir, random: mulberry32(43) }), (i) => `copy${i}`, 2, 200)
      const continued = yield* script(Ipam.make({ dataDir, random: mulberry32(43) }, memoryStore), networkOf, 2, 200)
      assert.deepStrictEqual(continued, fromCopy)
    }))
})

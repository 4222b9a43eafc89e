import { Ip, Ipam, type Lease, type Pool, type PoolConfig, resolvePool } from "@containerscale/core"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import fc from "fast-check"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { makeMemoryStore } from "../src/ipam/memoryStore.ts"

/**
 * Property tests of the allocator through the real `Ipam` service (in process, on a temporary
 * store on disk and on the memory store): random small pools and random sequences of
 * ADD/DEL/requested ADD/GC are run against a small model of the rules, written here independently
 * of the implementation.
 */

type Family = 4 | 6
type Strategy = "sequential" | "random" | "dense"

let dataDir: string
let storeCounter = 0
beforeAll(() => {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-strategies-"))
})
afterAll(() => {
  fs.rmSync(dataDir, { recursive: true, force: true })
})
const freshNetwork = () => `n${++storeCounter}`

// ---------------------------------------------------------------------------------------------
// pools: a numeric description, rendered to a PoolConfig, and the model's view of it

interface RangeModel {
  readonly family: Family
  readonly network: bigint
  readonly last: bigint
  readonly prefix: number
  readonly start: bigint
  readonly end: bigint
  readonly gateway: bigint
}

interface SetModel {
  readonly index: number
  readonly family: Family
  readonly ranges: ReadonlyArray<RangeModel>
  /** every address of the set's ranges, in the order the ranges are configured */
  readonly order: ReadonlyArray<bigint>
}

interface Exclusion {
  readonly family: Family
  readonly from: bigint
  readonly to: bigint
}

interface PoolModel {
  readonly config: PoolConfig
  readonly sets: ReadonlyArray<SetModel>
  readonly exclusions: ReadonlyArray<Exclusion>
  /** addresses to request: every address of every subnet, plus two outside the pool */
  readonly probes: ReadonlyArray<{ readonly family: Family; readonly value: bigint; readonly prefix: number }>
}

const fmt = (family: Family, v: bigint) => Ip.formatAddress(family, v)
const width = (f: Family) => (f === 4 ? 32 : 128)

const rangeRaw = fc.record({
  sizeBits: fc.integer({ min: 2, max: 4 }), // 4, 8 or 16 addresses
  a: fc.nat(15),
  b: fc.nat(15),
  hasStart: fc.boolean(),
  hasEnd: fc.boolean(),
  gateway: fc.option(fc.nat(15), { nil: undefined })
})
const setRaw = fc.record({
  family: fc.constantFrom<Family>(4, 6),
  ranges: fc.array(rangeRaw, { minLength: 1, maxLength: 3 })
})
const poolRaw = fc.record({
  sets: fc.array(setRaw, { minLength: 1, maxLength: 2 }),
  exclude: fc.array(
    fc.record({ set: fc.nat(1), range: fc.nat(2), offset: fc.nat(15), block: fc.boolean() }),
    { maxLength: 3 }
  )
})

type PoolRaw = typeof poolRaw extends fc.Arbitrary<infer T> ? T : never

const buildPool = (raw: PoolRaw, strategy: Strategy): PoolModel => {
  const sets: Array<SetModel> = []
  const rangesConfig: Array<Array<NonNullable<PoolConfig["ranges"]>[number][number]>> = []
  const probes: Array<{ family: Family; value: bigint; prefix: number }> = []
  for (const [i, s] of raw.sets.entries()) {
    const ranges: Array<RangeModel> = []
    const configs: Array<NonNullable<PoolConfig["ranges"]>[number][number]> = []
    for (const [j, r] of s.ranges.entries()) {
      const size = 1 << r.sizeBits
      const prefix = width(s.family) - r.sizeBits
      // disjoint subnets: set i, range j; ascending within a set
      const network = s.family === 4
        ? (10n << 24n) | (BigInt(i + 1) << 16n) | (BigInt(j) << 8n)
        : (0xfd00n << 112n) | (BigInt(i + 1) << 32n) | (BigInt(j) << 16n)
      const last = network + BigInt(size - 1)
      const lo = Math.min(r.a % size, r.b % size)
      const hi = Math.max(r.a % size, r.b % size)
      const defaultEnd = s.family === 4 ? size - 2 : size - 1
      let hasStart = r.hasStart
      let hasEnd = r.hasEnd
      let start = hasStart ? lo : 1
      let end = hasEnd ? hi : defaultEnd
      if (start > end) {
        hasStart = hasEnd = true
        start = lo
        end = hi
      }
      const gateway = network + BigInt(r.gateway === undefined ? 1 : r.gateway % size)
      ranges.push({ family: s.family, network, last, prefix, start: network + BigInt(start), end: network + BigInt(end), gateway })
      configs.push({
        subnet: `${fmt(s.family, network)}/${prefix}`,
        ...(hasStart ? { rangeStart: fmt(s.family, network + BigInt(start)) } : {}),
        ...(hasEnd ? { rangeEnd: fmt(s.family, network + BigInt(end)) } : {}),
        ...(r.gateway === undefined ? {} : { gateway: fmt(s.family, gateway) })
      })
      for (let v = network; v <= last; v++) probes.push({ family: s.family, value: v, prefix })
    }
    const order: Array<bigint> = []
    for (const r of ranges) for (let v = r.start; v <= r.end; v++) order.push(v)
    sets.push({ index: i, family: s.family, ranges, order })
    rangesConfig.push(configs)
  }
  const exclusions: Array<Exclusion> = []
  const exclude: Array<string> = []
  for (const e of raw.exclude) {
    const set = sets[e.set % sets.length]!
    const range = set.ranges[e.range % set.ranges.length]!
    const size = Number(range.last - range.network + 1n)
    const offset = BigInt(e.offset % size)
    if (e.block) {
      const from = range.network + (offset & ~3n)
      exclusions.push({ family: set.family, from, to: from + 3n })
      exclude.push(`${fmt(set.family, from)}/${width(set.family) - 2}`)
    } else {
      exclusions.push({ family: set.family, from: range.network + offset, to: range.network + offset })
      exclude.push(fmt(set.family, range.network + offset))
    }
  }
  probes.push({ family: 4, value: Result.getOrThrow(Ip.parseAddress("192.0.2.1")).value, prefix: 24 })
  probes.push({ family: 6, value: Result.getOrThrow(Ip.parseAddress("2001:db8::1")).value, prefix: 64 })
  return { config: { ranges: rangesConfig, strategy, ...(exclude.length > 0 ? { exclude } : {}) }, sets, exclusions, probes }
}

/** The model's rule for reserved addresses: network, the range's gateway, IPv4 broadcast, excluded. */
const reserved = (pool: PoolModel, r: RangeModel, v: bigint): boolean =>
  v === r.network || v === r.gateway || (r.family === 4 && v === r.last) ||
  pool.exclusions.some((e) => e.family === r.family && v >= e.from && v <= e.to)

const rangeIn = (set: SetModel, v: bigint) => set.ranges.find((r) => v >= r.start && v <= r.end)

// ---------------------------------------------------------------------------------------------
// the model of the store

const ATTACHMENTS = Array.from({ length: 12 }, (_, k) => ({ containerId: `c${k >> 1}`, ifname: `eth${k & 1}` }))
const akey = (a: { containerId: string; ifname: string }) => `${a.containerId}/${a.ifname}`
const vkey = (family: Family, v: bigint) => `${family}:${v}`

class Model {
  /** address key -> holder */
  readonly held = new Map<string, { attachment: string; family: Family; value: bigint; set: number }>()
  /** set index -> last address handed out in it */
  readonly last = new Map<number, bigint>()
  constructor(readonly pool: PoolModel, readonly strategy: Strategy) {}

  holds(attachment: string, set: SetModel) {
    for (const h of this.held.values()) if (h.attachment === attachment && h.set === set.index) return h.value
    return undefined
  }
  free(set: SetModel, v: bigint) {
    const r = rangeIn(set, v)
    return r !== undefined && !reserved(this.pool, r, v) && !this.held.has(vkey(set.family, v))
  }
  freeAddresses(set: SetModel) {
    return set.order.filter((v) => this.free(set, v))
  }
  /** the address the strategy must pick, or "any" (random: any free address), or undefined (exhausted) */
  expectedPick(set: SetModel): bigint | "any" | undefined {
    const free = this.freeAddresses(set)
    if (free.length === 0) return undefined
    if (this.strategy === "random") return "any"
    if (this.strategy === "dense") return free[0]
    const last = this.last.get(set.index)
    const at = last === undefined ? -1 : set.order.indexOf(last)
    for (let step = 1; step <= set.order.length; step++) {
      const v = set.order[(at + step) % set.order.length]!
      if (this.free(set, v)) return v
    }
    return undefined
  }
  /** where a requested address lies: the set, or the error code the plugin must answer */
  locate(family: Family, v: bigint): SetModel | 102 {
    for (const set of this.pool.sets) {
      if (set.family !== family) continue
      const r = rangeIn(set, v)
      if (r === undefined) continue
      return reserved(this.pool, r, v) ? 102 : set
    }
    return 102
  }
}

// ---------------------------------------------------------------------------------------------
// operations

type Op =
  | { readonly kind: "add"; readonly att: number }
  | { readonly kind: "req"; readonly att: number; readonly probe: number; readonly withPrefix: boolean; readonly held: boolean }
  | { readonly kind: "del"; readonly att: number }
  | { readonly kind: "gc"; readonly keep: number }

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant("add" as const), att: fc.nat(11) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant("req" as const),
      att: fc.nat(11),
      probe: fc.nat(),
      withPrefix: fc.boolean(),
      held: fc.boolean()
    })
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("del" as const), att: fc.nat(11) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("gc" as const), keep: fc.nat(4095) }) }
)

/** A seeded PRNG, so that a failing `random` run replays exactly. */
const mulberry32 = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

const run = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(Effect.result(effect))

const errorOf = (r: Result.Result<unknown, unknown>) => {
  assert.isTrue(Result.isFailure(r), `expected a failure, got ${JSON.stringify(Result.isSuccess(r) ? r.success : undefined)}`)
  return (r as Result.Failure<unknown, { _tag: string; cniCode: number; message: string }>).failure
}

/** Checks a lease against the set/range it must come from. */
const checkLease = (m: Model, lease: Lease, set: SetModel, value: bigint) => {
  const r = rangeIn(set, value)!
  assert.strictEqual(lease.rangeSet, set.index)
  assert.strictEqual(lease.family, set.family)
  assert.strictEqual(lease.ip, fmt(set.family, value))
  assert.strictEqual(lease.address, `${fmt(set.family, value)}/${r.prefix}`)
  assert.strictEqual(lease.gateway, fmt(set.family, r.gateway))
  assert.isFalse(reserved(m.pool, r, value), `${lease.ip} is reserved`)
}

const valueOf = (lease: Lease) => Result.getOrThrow(Ip.parseAddress(lease.ip)).value

type Backend = "disk" | "memory"

const runScenario = async (strategy: Strategy, raw: PoolRaw, ops: ReadonlyArray<Op>, seed: number, backend: Backend) => {
  const poolModel = buildPool(raw, strategy)
  const resolved = resolvePool(poolModel.config)
  if (Result.isFailure(resolved)) assert.fail(`generated pool rejected: ${resolved.failure.message} ${JSON.stringify(poolModel.config)}`)
  const pool: Pool = resolved.success
  const ipam = Ipam.make({ dataDir, random: mulberry32(seed) }, backend === "memory" ? makeMemoryStore() : undefined)
  const network = freshNetwork()
  const m = new Model(poolModel, strategy)

  for (const op of ops) {
    if (op.kind === "add" || op.kind === "req") {
      const attachment = ATTACHMENTS[op.att]!
      const key = akey(attachment)
      let requested: { family: Family; value: bigint; text: string } | undefined
      if (op.kind === "req") {
        // half the time an address somebody holds (maybe this attachment), else any address of the subnets
        const held = [...m.held.values()].map((h) => ({
          family: h.family,
          value: h.value,
          prefix: rangeIn(poolModel.sets[h.set]!, h.value)!.prefix
        }))
        const p = op.held && held.length > 0 ? held[op.probe % held.length]! : poolModel.probes[op.probe % poolModel.probes.length]!
        // "ip/prefix" with the subnet's own prefix, as CNI's ips convention writes it
        const prefix = op.withPrefix ? `/${p.prefix}` : ""
        requested = { ...p, text: fmt(p.family, p.value) + prefix }
      }
      const outcome = await run(ipam.allocate({
        network,
        pool,
        ...attachment,
        ...(requested === undefined ? {} : { requested: [requested.text] })
      }))
      // the model's answer
      let expectedCode: number | undefined
      let requestSet: SetModel | undefined
      if (requested !== undefined) {
        const where = m.locate(requested.family, requested.value)
        if (where === 102) expectedCode = 102
        else {
          requestSet = where
          const h = m.held.get(vkey(requested.family, requested.value))
          if (h !== undefined && h.attachment !== key) expectedCode = 103
        }
      }
      const picks: Array<{ set: SetModel; value: bigint | "any"; isNew: boolean }> = []
      if (expectedCode === undefined) {
        for (const set of poolModel.sets) {
          const mine = m.holds(key, set)
          if (mine !== undefined) {
            if (requestSet === set && requested!.value !== mine) {
              expectedCode = 103
              break
            }
            picks.push({ set, value: mine, isNew: false })
            continue
          }
          if (requestSet === set) {
            picks.push({ set, value: requested!.value, isNew: true })
            continue
          }
          const pick = m.expectedPick(set)
          if (pick === undefined) {
            expectedCode = 11
            break
          }
          picks.push({ set, value: pick, isNew: true })
        }
      }
      if (expectedCode !== undefined) {
        const e = errorOf(outcome)
        assert.strictEqual(e.cniCode, expectedCode, `${op.kind} ${key} ${requested?.text ?? ""}: ${e.message}`)
        const tag = { 11: "PoolExhausted", 102: "AddressNotInPool", 103: "AddressInUse" }[expectedCode]
        assert.strictEqual(e._tag, tag)
        if (expectedCode === 11) {
          assert.include(e.message, "no free address")
          assert.include(e.message, "remove unused containers, run GC, or add a range")
        }
      } else {
        if (Result.isFailure(outcome)) {
          assert.fail(`${op.kind} ${key} ${requested?.text ?? ""} failed: ${(outcome.failure as { message: string }).message}`)
        }
        const leases = outcome.success
        assert.strictEqual(leases.length, poolModel.sets.length)
        for (const [i, p] of picks.entries()) {
          const lease = leases[i]!
          const value = valueOf(lease)
          if (p.value === "any") {
            assert.isTrue(m.free(p.set, value), `random picked ${lease.ip}, which is not free`)
          } else {
            assert.strictEqual(lease.ip, fmt(p.set.family, p.value), `${strategy} ${op.kind} ${key} in set ${p.set.index}`)
          }
          checkLease(m, lease, p.set, value)
          if (p.isNew) {
            m.held.set(vkey(p.set.family, value), { attachment: key, family: p.set.family, value, set: p.set.index })
            m.last.set(p.set.index, value)
          }
        }
      }
    } else if (op.kind === "del") {
      const attachment = ATTACHMENTS[op.att]!
      const key = akey(attachment)
      const outcome = await run(ipam.release({ network, ...attachment }))
      if (Result.isFailure(outcome)) assert.fail(`release failed: ${(outcome.failure as { message: string }).message}`)
      const expected = [...m.held.entries()].filter(([, h]) => h.attachment === key)
      assert.deepStrictEqual([...outcome.success].sort(), expected.map(([, h]) => fmt(h.family, h.value)).sort())
      for (const [k] of expected) m.held.delete(k)
    } else {
      const valid = ATTACHMENTS.filter((_, k) => (op.keep >> k) & 1)
      const keep = new Set(valid.map(akey))
      const outcome = await run(ipam.gc({ network, valid }))
      if (Result.isFailure(outcome)) assert.fail(`gc failed: ${(outcome.failure as { message: string }).message}`)
      const expected = [...m.held.entries()].filter(([, h]) => !keep.has(h.attachment))
      assert.deepStrictEqual(
        outcome.success.map((r) => `${r.containerId}/${r.ifname} ${r.ip}`).sort(),
        expected.map(([, h]) => `${h.attachment} ${fmt(h.family, h.value)}`).sort()
      )
      for (const [k] of expected) m.held.delete(k)
    }

    // invariants, read back from the store
    const usage = await run(ipam.usage({ network, pool }))
    if (Result.isFailure(usage)) assert.fail(`usage failed: ${(usage.failure as { message: string }).message}`)
    const seen = new Set<string>()
    for (const u of usage.success) {
      const set = poolModel.sets[u.rangeSet]!
      // size: the addresses that can be handed out (reserved ones left out)
      assert.strictEqual(u.size, BigInt(set.order.filter((v) => !reserved(poolModel, rangeIn(set, v)!, v)).length))
      assert.strictEqual(u.used, u.allocations.length)
      for (const a of u.allocations) {
        const v = Result.getOrThrow(Ip.parseAddress(a.ip)).value
        const r = rangeIn(set, v)
        assert.isDefined(r, `${a.ip} is outside the pool`)
        assert.isFalse(reserved(poolModel, r!, v), `${a.ip} is reserved`)
        assert.isFalse(seen.has(a.ip), `${a.ip} is held twice`)
        seen.add(a.ip)
      }
    }
    const stored = usage.success.flatMap((u) => u.allocations.map((a) => `${a.containerId}/${a.ifname} ${a.ip}`)).sort()
    const modelled = [...m.held.values()].map((h) => `${h.attachment} ${fmt(h.family, h.value)}`).sort()
    assert.deepStrictEqual(stored, modelled)
    // each attachment holds one address per set, or none
    const perAttachment = new Map<string, number>()
    for (const h of m.held.values()) perAttachment.set(h.attachment, (perAttachment.get(h.attachment) ?? 0) + 1)
    for (const n of perAttachment.values()) assert.strictEqual(n, poolModel.sets.length)
  }
}

const NUM_RUNS = 100

describe("allocation strategies against a model (random pools, random operation sequences)", () => {
  for (const backend of ["disk", "memory"] as const) {
    for (const strategy of ["sequential", "dense", "random"] as const) {
      it(`${strategy} (${backend} store)`, async () => {
        await fc.assert(
          fc.asyncProperty(poolRaw, fc.array(opArb, { minLength: 1, maxLength: 30 }), fc.integer(), async (raw, ops, seed) => {
            await runScenario(strategy, raw, ops, seed, backend)
          }),
          { numRuns: NUM_RUNS }
        )
      })
    }
  }
})

// ---------------------------------------------------------------------------------------------
// a few fixed scenarios that read as documentation

const poolOf = (config: PoolConfig) => Result.getOrThrow(resolvePool(config))

describe("fixed scenarios", () => {
  it.live("sequential continues after the last address handed out and wraps around", () =>
    Effect.gen(function*() {
      const ipam = Ipam.make({ dataDir })
      const network = freshNetwork()
      const pool = poolOf({ subnet: "10.9.0.0/29", strategy: "sequential" }) // .2-.6 usable (.1 gateway, .7 broadcast)
      const add = (id: string) => ipam.allocate({ network, pool, containerId: id, ifname: "eth0" }).pipe(Effect.map((l) => l[0]!.ip))
      const del = (id: string) => ipam.release({ network, containerId: id, ifname: "eth0" })
      assert.deepStrictEqual([yield* add("a"), yield* add("b"), yield* add("c")], ["10.9.0.2", "10.9.0.3", "10.9.0.4"])
      yield* del("a")
      assert.strictEqual(yield* add("d"), "10.9.0.5") // not the freed .2
      assert.strictEqual(yield* add("e"), "10.9.0.6")
      assert.strictEqual(yield* add("f"), "10.9.0.2") // wrapped
      const exhausted = yield* Effect.flip(add("g"))
      assert.strictEqual(exhausted._tag, "PoolExhausted")
      assert.strictEqual(exhausted.cniCode, 11)
      assert.include(exhausted.message, "10.9.0.0/29")
    }))

  it.live("dense always hands out the lowest free address", () =>
    Effect.gen(function*() {
      const ipam = Ipam.make({ dataDir })
      const network = freshNetwork()
      const pool = poolOf({ ranges: [[{ subnet: "10.9.1.0/29" }, { subnet: "10.9.2.0/29" }]], strategy: "dense", exclude: ["10.9.1.3"] })
      const add = (id: string) => ipam.allocate({ network, pool, containerId: id, ifname: "eth0" }).pipe(Effect.map((l) => l[0]!.ip))
      const del = (id: string) => ipam.release({ network, containerId: id, ifname: "eth0" })
      assert.deepStrictEqual([yield* add("a"), yield* add("b"), yield* add("c")], ["10.9.1.2", "10.9.1.4", "10.9.1.5"])
      yield* del("a")
      assert.strictEqual(yield* add("d"), "10.9.1.2")
      assert.strictEqual(yield* add("e"), "10.9.1.6")
      assert.strictEqual(yield* add("f"), "10.9.2.2") // the second range, after its gateway
    }))

  it.live("allocation is idempotent per (container id, ifname); release of an unknown attachment succeeds", () =>
    Effect.gen(function*() {
      const ipam = Ipam.make({ dataDir })
      const network = freshNetwork()
      const pool = poolOf({ ranges: [[{ subnet: "10.9.3.0/28" }], [{ subnet: "fd00:9:3::/124" }]] })
      const a = yield* ipam.allocate({ network, pool, containerId: "a", ifname: "eth0" })
      const again = yield* ipam.allocate({ network, pool, containerId: "a", ifname: "eth0" })
      assert.deepStrictEqual(again, a)
      assert.deepStrictEqual(a.map((l) => l.address), ["10.9.3.2/28", "fd00:9:3::2/124"])
      const other = yield* ipam.allocate({ network, pool, containerId: "a", ifname: "eth1" })
      assert.deepStrictEqual(other.map((l) => l.address), ["10.9.3.3/28", "fd00:9:3::3/124"])
      assert.deepStrictEqual(yield* ipam.release({ network, containerId: "nobody", ifname: "eth0" }), [])
      assert.deepStrictEqual(yield* ipam.release({ network, containerId: "a", ifname: "eth9" }), [])
      assert.deepStrictEqual([...(yield* ipam.release({ network, containerId: "a", ifname: "eth0" }))].sort(), ["10.9.3.2", "fd00:9:3::2"])
      assert.deepStrictEqual(yield* ipam.release({ network, containerId: "a", ifname: "eth0" }), [])
    }))

  it.live("requested addresses: honoured when free, 102 outside the pool or reserved, 103 in use", () =>
    Effect.gen(function*() {
      const ipam = Ipam.make({ dataDir })
      const network = freshNetwork()
      const pool = poolOf({ ranges: [[{ subnet: "10.9.4.0/24", rangeStart: "10.9.4.10", rangeEnd: "10.9.4.50" }]], exclude: ["10.9.4.20"] })
      const add = (id: string, ip: string) => ipam.allocate({ network, pool, containerId: id, ifname: "eth0", requested: [ip] })
      assert.strictEqual((yield* add("a", "10.9.4.33"))[0]!.address, "10.9.4.33/24")
      assert.strictEqual((yield* add("a", "10.9.4.33/24"))[0]!.address, "10.9.4.33/24") // same attachment: same answer
      const inUse = yield* Effect.flip(add("b", "10.9.4.33"))
      assert.strictEqual(inUse._tag, "AddressInUse")
      assert.strictEqual(inUse.cniCode, 103)
      assert.include(inUse.message, "10.9.4.33")
      for (const ip of ["10.9.4.5", "10.9.4.51", "10.9.5.10", "fd00::1"]) {
        const e = yield* Effect.flip(add("b", ip))
        assert.strictEqual(e._tag, "AddressNotInPool")
        assert.strictEqual(e.cniCode, 102)
        assert.include(e.message, "outside the pool")
      }
      const excluded = yield* Effect.flip(add("b", "10.9.4.20"))
      assert.strictEqual(excluded.cniCode, 102)
      assert.include(excluded.message, "reserved")
      const garbage = yield* Effect.flip(add("b", "not-an-ip"))
      assert.strictEqual(garbage.cniCode, 102)
      // a second address for the same attachment in the same set
      const other = yield* Effect.flip(add("a", "10.9.4.34"))
      assert.strictEqual(other.cniCode, 103)
      // nothing of the refused requests was recorded
      const usage = yield* ipam.usage({ network, pool })
      assert.deepStrictEqual(usage[0]!.allocations, [{ containerId: "a", ifname: "eth0", ip: "10.9.4.33" }])
    }))

  it.live("GC keeps exactly the valid attachments", () =>
    Effect.gen(function*() {
      const ipam = Ipam.make({ dataDir })
      const network = freshNetwork()
      const pool = poolOf({ subnet: "10.9.5.0/24" })
      for (const id of ["a", "b", "c"]) {
        for (const ifname of ["eth0", "eth1"]) yield* ipam.allocate({ network, pool, containerId: id, ifname })
      }
      const released = yield* ipam.gc({ network, valid: [{ containerId: "a", ifname: "eth0" }, { containerId: "c", ifname: "eth1" }, { containerId: "zz", ifname: "eth0" }] })
      assert.deepStrictEqual(released.map((r) => `${r.containerId}/${r.ifname}`).sort(), ["a/eth1", "b/eth0", "b/eth1", "c/eth0"])
      const usage = yield* ipam.usage({ network, pool })
      assert.deepStrictEqual(usage[0]!.allocations.map((a) => `${a.containerId}/${a.ifname}`).sort(), ["a/eth0", "c/eth1"])
      assert.deepStrictEqual(yield* ipam.gc({ network, valid: [] }).pipe(Effect.map((r) => r.length)), 2)
      assert.strictEqual((yield* ipam.usage({ network, pool }))[0]!.used, 0)
    }))

  it.live("sequential keeps a separate position for each range set, also when two sets start with the same subnet", () =>
    Effect.gen(function*() {
      // host-local accepts two range sets in one subnet as long as the ranges do not overlap, and keeps
      // last_reserved_ip per range set index. Here the sets share their first subnet (the store's set key).
      const ipam = Ipam.make({ dataDir })
      const network = freshNetwork()
      const pool = poolOf({
        ranges: [
          [{ subnet: "10.9.6.0/24", rangeStart: "10.9.6.10", rangeEnd: "10.9.6.19" }],
          [{ subnet: "10.9.6.0/24", rangeStart: "10.9.6.20", rangeEnd: "10.9.6.29" }]
        ]
      })
      const add = (id: string) =>
        ipam.allocate({ network, pool, containerId: id, ifname: "eth0" }).pipe(Effect.map((l) => l.map((x) => x.ip)))
      assert.deepStrictEqual(yield* add("a"), ["10.9.6.10", "10.9.6.20"])
      assert.deepStrictEqual(yield* add("b"), ["10.9.6.11", "10.9.6.21"])
      yield* ipam.release({ network, containerId: "a", ifname: "eth0" })
      // sequential: after .11 in set 0 and after .21 in set 1, not back to the freed .10
      assert.deepStrictEqual(yield* add("c"), ["10.9.6.12", "10.9.6.22"])
    }))
})

import { Result } from "effect"
import { AddressInUse, AddressNotInPool, PoolExhausted } from "../errors.ts"
import { type Address, code, type Family, formatAddress } from "../ip.ts"
import { describeRange, isReserved, locate, type Pool, type Range, rangeOf, type RangeSet, rangeSetSize } from "../pool.ts"
import { nextUntakenV4 } from "./bitmap.ts"
import { attachmentKey, type Change, type Holder, type StoreState } from "./state.ts"

export interface Lease {
  readonly family: Family
  readonly ip: string
  /** the host address with the subnet's prefix, as CNI results want it: "10.244.1.5/24" */
  readonly address: string
  readonly gateway: string | undefined
  readonly rangeSet: number
}

export const leaseOf = (set: RangeSet, range: Range, value: bigint): Lease => {
  const family = range.subnet.family
  const ip = formatAddress(family, value)
  return {
    family,
    ip,
    address: `${ip}/${range.subnet.prefix}`,
    gateway: range.gateway === undefined ? undefined : formatAddress(family, range.gateway),
    rangeSet: set.index
  }
}

const isFree = (pool: Pool, state: StoreState, set: RangeSet, range: Range, value: bigint) =>
  !isReserved(pool, range, value) && !state.byCode.has(code({ family: set.family, value }))

/** Walks the range set in order from (range i, value v), wrapping once, and returns the first free address. */
const scan = (
  pool: Pool,
  state: StoreState,
  set: RangeSet,
  fromRange: number,
  fromValue: bigint
): { range: Range; value: bigint } | undefined => {
  const n = set.ranges.length
  for (let step = 0; step <= n; step++) {
    const i = (fromRange + step) % n
    const range = set.ranges[i]!
    const lo = step === 0 ? fromValue : range.start
    const hi = step === n ? fromValue - 1n : range.end
    if (set.family === 4) {
      const end = Number(hi)
      for (let v = nextUntakenV4(state.v4, Number(lo), end); v !== -1; v = nextUntakenV4(state.v4, v + 1, end)) {
        if (!isReserved(pool, range, BigInt(v))) return { range, value: BigInt(v) }
      }
      continue
    }
    for (let v = lo; v <= hi; v++) {
      if (isFree(pool, state, set, range, v)) return { range, value: v }
    }
  }
  return undefined
}

const afterLast = (state: StoreState, set: RangeSet): [number, bigint] => {
  const last = state.last.get(set.key)
  if (last !== undefined) {
    const value = set.family === 6 ? last ^ (1n << 128n) : last
    const i = set.ranges.findIndex((r) => value >= r.start && value <= r.end)
    if (i !== -1) {
      const range = set.ranges[i]!
      return value < range.end ? [i, value + 1n] : [(i + 1) % set.ranges.length, set.ranges[(i + 1) % set.ranges.length]!.start]
    }
  }
  return [0, set.ranges[0]!.start]
}

const randomBelow = (n: bigint, random: () => number): bigint => {
  if (n <= BigInt(Number.MAX_SAFE_INTEGER)) return BigInt(Math.floor(random() * Number(n)))
  let r = 0n
  for (let bits = 0n; (1n << bits) < n; bits += 48n) r = (r << 48n) | BigInt(Math.floor(random() * 2 ** 48))
  return r % n
}

const offsetToAddress = (set: RangeSet, offset: bigint): [number, bigint] => {
  for (const [i, r] of set.ranges.entries()) {
    const size = r.end - r.start + 1n
    if (offset < size) return [i, r.start + offset]
    offset -= size
  }
  return [0, set.ranges[0]!.start]
}

export const pick = (
  pool: Pool,
  state: StoreState,
  set: RangeSet,
  random: () => number
): { range: Range; value: bigint } | undefined => {
  switch (pool.strategy) {
    case "dense": {
      const ascending = { ...set, ranges: [...set.ranges].sort((a, b) => (a.start < b.start ? -1 : 1)) }
      return scan(pool, state, ascending, 0, ascending.ranges[0]!.start)
    }
    case "sequential": {
      const [i, v] = afterLast(state, set)
      return scan(pool, state, set, i, v)
    }
    case "random": {
      const size = rangeSetSize(set)
      for (let attempt = 0; attempt < 32; attempt++) {
        const [i, v] = offsetToAddress(set, randomBelow(size, random))
        const range = set.ranges[i]!
        if (isFree(pool, state, set, range, v)) return { range, value: v }
      }
      const [i, v] = offsetToAddress(set, randomBelow(size, random))
      return scan(pool, state, set, i, v)
    }
  }
}

export interface AllocateInput {
  readonly pool: Pool
  readonly containerId: string
  readonly ifname: string
  readonly requested: ReadonlyArray<{ readonly address: Address; readonly prefix?: number | undefined }>
  readonly random: () => number
}

export type AllocateError = PoolExhausted | AddressNotInPool | AddressInUse

/**
 * One address per range set for the attachment. An attachment that already holds addresses keeps
 * them (a repeated ADD gets the same answer); requested addresses must lie in the pool and be free.
 */
export const allocate = (
  state: StoreState,
  input: AllocateInput
): Result.Result<{ value: ReadonlyArray<Lease>; changes: ReadonlyArray<Change> }, AllocateError> => {
  const { pool, containerId, ifname } = input
  const held = state.byAttachment.get(attachmentKey(containerId, ifname)) ?? new Set<bigint>()
  const wanted = new Map<number, { range: Range; value: bigint }>()
  for (const { address, prefix } of input.requested) {
    const where = locate(pool, address)
    const ip = formatAddress(address.family, address.value)
    if ("reason" in where) {
      return Result.fail(new AddressNotInPool({ message: `requested address ${where.reason}: ask for an address inside the pool` }))
    }
    if (prefix !== undefined && prefix !== where.range.subnet.prefix) {
      return Result.fail(
        new AddressNotInPool({
          message: `requested address ${ip}/${prefix} does not match its subnet ${where.range.subnet.text}: ask for ${ip} or ${ip}/${where.range.subnet.prefix}`
        })
      )
    }
    if (wanted.has(where.set.index)) {
      return Result.fail(
        new AddressNotInPool({ message: `two requested addresses fall in range set ${where.set.index}: ask for at most one per range set` })
      )
    }
    const holder = state.byCode.get(code(address))
    if (holder !== undefined && (holder.containerId !== containerId || holder.ifname !== ifname)) {
      return Result.fail(
        new AddressInUse({ message: `requested address ${ip} is already in use by container ${holder.containerId} (${holder.ifname}): ask for a free address` })
      )
    }
    wanted.set(where.set.index, { range: where.range, value: address.value })
  }
  const leases: Array<Lease> = []
  const changes: Array<Change> = []
  for (const set of pool.rangeSets) {
    const mine = [...held].map((c) => state.byCode.get(c)!).find((h) => h.family === set.family && rangeOf(set, h.value) !== undefined)
    const request = wanted.get(set.index)
    if (mine !== undefined) {
      if (request !== undefined && request.value !== mine.value) {
        return Result.fail(
          new AddressInUse({
            message: `container ${containerId} (${ifname}) already holds ${formatAddress(mine.family, mine.value)} in range set ${set.index}, ` +
              `not the requested ${formatAddress(set.family, request.value)}: delete the attachment first`
          })
        )
      }
      leases.push(leaseOf(set, rangeOf(set, mine.value)!, mine.value))
      continue
    }
    const chosen = request ?? pick(pool, state, set, input.random)
    if (chosen === undefined) {
      return Result.fail(
        new PoolExhausted({
          message: `no free address left in range set ${set.index} (${set.ranges.map(describeRange).join(", ")}): ` +
            `remove unused containers, run GC, or add a range`
        })
      )
    }
    const holder: Holder = { family: set.family, value: chosen.value, containerId, ifname, setKey: set.key }
    changes.push({ op: "+", holder })
    leases.push(leaseOf(set, chosen.range, chosen.value))
  }
  return Result.succeed({ value: leases, changes })
}

import { Result, Schema } from "effect"
import { InvalidNetworkConfig } from "./errors.ts"
import { type Address, contains, type Family, formatAddress, parseAddress, parseSubnet, type Subnet } from "./ip.ts"

/** host-local's range object. */
export const RangeConfig = Schema.Struct({
  subnet: Schema.String,
  rangeStart: Schema.optional(Schema.String),
  rangeEnd: Schema.optional(Schema.String),
  gateway: Schema.optional(Schema.String)
})
export type RangeConfig = typeof RangeConfig.Type

export const RouteConfig = Schema.Struct({
  dst: Schema.String,
  gw: Schema.optional(Schema.String)
})
export type RouteConfig = typeof RouteConfig.Type

export const Strategy = Schema.Literals(["sequential", "random", "dense"])
export type Strategy = typeof Strategy.Type

/**
 * The pool part of an `ipam` section: host-local's keys (`ranges`, or the older single-range
 * `subnet`/`rangeStart`/`rangeEnd`/`gateway`; `routes`) plus `strategy` and `exclude`.
 */
export const PoolConfig = Schema.Struct({
  ranges: Schema.optional(Schema.Array(Schema.Array(RangeConfig))),
  subnet: Schema.optional(Schema.String),
  rangeStart: Schema.optional(Schema.String),
  rangeEnd: Schema.optional(Schema.String),
  gateway: Schema.optional(Schema.String),
  routes: Schema.optional(Schema.Array(RouteConfig)),
  strategy: Schema.optional(Strategy),
  /** addresses ("10.0.0.7") or subnets ("10.0.0.64/27") never handed out */
  exclude: Schema.optional(Schema.Array(Schema.String))
})
export type PoolConfig = typeof PoolConfig.Type

export interface Range {
  readonly subnet: Subnet
  readonly start: bigint
  readonly end: bigint
  readonly gateway: bigint | undefined
}

export interface RangeSet {
  readonly index: number
  readonly family: Family
  /** identifies the set in the store across config reloads: its first range, "start-end" */
  readonly key: string
  readonly ranges: ReadonlyArray<Range>
}

interface Exclusion {
  readonly family: Family
  readonly from: bigint
  readonly to: bigint
}

export interface Pool {
  readonly strategy: Strategy
  readonly rangeSets: ReadonlyArray<RangeSet>
  readonly exclusions: ReadonlyArray<Exclusion>
  readonly routes: ReadonlyArray<RouteConfig>
}

const invalid = (message: string) => new InvalidNetworkConfig({ message: `ipam: ${message}` })

const parseIn = (
  what: string,
  input: string | undefined,
  subnet: Subnet
): Result.Result<bigint | undefined, InvalidNetworkConfig> => {
  if (input === undefined) return Result.succeed(undefined)
  const parsed = parseAddress(input)
  if (Result.isFailure(parsed)) return Result.fail(invalid(`${what}: ${parsed.failure}`))
  if (!contains(subnet, parsed.success)) {
    return Result.fail(invalid(`${what} ${input} is outside its subnet ${subnet.text}`))
  }
  return Result.succeed(parsed.success.value)
}

const resolveRange = (config: RangeConfig, where: string): Result.Result<Range, InvalidNetworkConfig> =>
  Result.gen(function*() {
    const subnet = yield* parseSubnet(config.subnet).pipe(Result.mapError((e) => invalid(`${where}: ${e}`)))
    const width = subnet.family === 4 ? 32 : 128
    if (subnet.prefix > width - 2) {
      return yield* Result.fail(
        invalid(`${where}: subnet ${subnet.text} is too small to allocate from; use a prefix of /${width - 2} or shorter`)
      )
    }
    const usableLast = subnet.family === 4 ? subnet.last - 1n : subnet.last
    const start = (yield* parseIn(`${where}: rangeStart`, config.rangeStart, subnet)) ?? subnet.network + 1n
    const end = (yield* parseIn(`${where}: rangeEnd`, config.rangeEnd, subnet)) ?? usableLast
    if (start > end) {
      return yield* Result.fail(invalid(`${where}: rangeStart ${config.rangeStart} comes after rangeEnd ${config.rangeEnd}`))
    }
    const gateway = (yield* parseIn(`${where}: gateway`, config.gateway, subnet)) ?? subnet.network + 1n
    return { subnet, start, end, gateway }
  })

const resolveExclusion = (input: string): Result.Result<Exclusion, InvalidNetworkConfig> => {
  if (input.includes("/")) {
    return parseSubnet(input).pipe(
      Result.map((s): Exclusion => ({ family: s.family, from: s.network, to: s.last })),
      Result.mapError((e) => invalid(`exclude: ${e}`))
    )
  }
  return parseAddress(input).pipe(
    Result.map((a): Exclusion => ({ family: a.family, from: a.value, to: a.value })),
    Result.mapError((e) => invalid(`exclude: ${e}`))
  )
}

const overlaps = (a: Range, b: Range) =>
  a.subnet.family === b.subnet.family && a.start <= b.end && b.start <= a.end

/** Checks a pool config and resolves it into range sets with numeric bounds. */
export const resolvePool = (config: PoolConfig): Result.Result<Pool, InvalidNetworkConfig> =>
  Result.gen(function*() {
    const legacy = config.subnet === undefined ? undefined : [[{
      subnet: config.subnet,
      ...(config.rangeStart === undefined ? {} : { rangeStart: config.rangeStart }),
      ...(config.rangeEnd === undefined ? {} : { rangeEnd: config.rangeEnd }),
      ...(config.gateway === undefined ? {} : { gateway: config.gateway })
    }]]
    if (config.ranges !== undefined && legacy !== undefined) {
      return yield* Result.fail(invalid(`give either "ranges" or "subnet", not both`))
    }
    const sets = config.ranges ?? legacy
    if (sets === undefined || sets.length === 0) {
      return yield* Result.fail(invalid(`no address ranges: add "ranges": [[{"subnet": "10.244.1.0/24"}]]`))
    }
    const rangeSets: Array<RangeSet> = []
    const all: Array<{ range: Range; where: string }> = []
    for (const [i, set] of sets.entries()) {
      if (set.length === 0) return yield* Result.fail(invalid(`ranges[${i}] is empty: give it at least one range`))
      const ranges: Array<Range> = []
      for (const [j, rangeConfig] of set.entries()) {
        const where = `ranges[${i}][${j}]`
        const range = yield* resolveRange(rangeConfig, where)
        if (ranges.length > 0 && range.subnet.family !== ranges[0]!.subnet.family) {
          return yield* Result.fail(invalid(`${where}: a range set must hold one address family; put IPv4 and IPv6 in separate range sets`))
        }
        for (const other of all) {
          if (overlaps(other.range, range)) {
            return yield* Result.fail(invalid(`${where} (${range.subnet.text}) overlaps ${other.where} (${other.range.subnet.text})`))
          }
        }
        all.push({ range, where })
        ranges.push(range)
      }
      const first = ranges[0]!
      const family = first.subnet.family
      rangeSets.push({ index: i, family, key: `${formatAddress(family, first.start)}-${formatAddress(family, first.end)}`, ranges })
    }
    const exclusions: Array<Exclusion> = []
    for (const e of config.exclude ?? []) exclusions.push(yield* resolveExclusion(e))
    for (const route of config.routes ?? []) {
      yield* parseSubnet(route.dst).pipe(Result.mapError((e) => invalid(`routes: dst ${e}`)))
      if (route.gw !== undefined) yield* parseAddress(route.gw).pipe(Result.mapError((e) => invalid(`routes: gw ${e}`)))
    }
    return { strategy: config.strategy ?? "sequential", rangeSets, exclusions, routes: config.routes ?? [] }
  })

export const rangeOf = (set: RangeSet, value: bigint): Range | undefined =>
  set.ranges.find((r) => value >= r.start && value <= r.end)

/** Network, gateway, IPv4 broadcast and excluded addresses are never handed out. */
export const isReserved = (pool: Pool, range: Range, value: bigint): boolean => {
  if (value === range.subnet.network || value === range.gateway) return true
  if (range.subnet.family === 4 && value === range.subnet.last) return true
  for (const e of pool.exclusions) {
    if (e.family === range.subnet.family && value >= e.from && value <= e.to) return true
  }
  return false
}

export const rangeSetSize = (set: RangeSet): bigint => set.ranges.reduce((n, r) => n + (r.end - r.start + 1n), 0n)

/** How many addresses of the set can be handed out: its size less the reserved ones. */
export const usableSize = (pool: Pool, set: RangeSet): bigint => {
  let usable = 0n
  for (const range of set.ranges) {
    const excluded = pool.exclusions
      .filter((e) => e.family === set.family && e.from <= range.end && e.to >= range.start)
      .map((e) => [e.from < range.start ? range.start : e.from, e.to > range.end ? range.end : e.to] as const)
      .sort((a, b) => (a[0] < b[0] ? -1 : 1))
    let covered = 0n
    let until = range.start - 1n
    for (const [from, to] of excluded) {
      const lo = from > until ? from : until + 1n
      if (to >= lo) covered += to - lo + 1n
      if (to > until) until = to
    }
    const inExclusion = (v: bigint) => excluded.some(([from, to]) => v >= from && v <= to)
    const points = new Set([range.subnet.network, range.gateway, set.family === 4 ? range.subnet.last : undefined])
    let reservedPoints = 0n
    for (const v of points) {
      if (v !== undefined && v >= range.start && v <= range.end && !inExclusion(v)) reservedPoints++
    }
    usable += range.end - range.start + 1n - covered - reservedPoints
  }
  return usable
}

/** Where an address falls in the pool, or why it cannot be handed out. */
export const locate = (
  pool: Pool,
  address: Address
): { readonly set: RangeSet; readonly range: Range } | { readonly reason: string } => {
  for (const set of pool.rangeSets) {
    if (set.family !== address.family) continue
    const range = rangeOf(set, address.value)
    if (range === undefined) continue
    if (isReserved(pool, range, address.value)) {
      return { reason: `${formatAddress(address.family, address.value)} is reserved (network, gateway, broadcast or excluded)` }
    }
    return { set, range }
  }
  const where = pool.rangeSets.map((s) => s.ranges.map(describeRange).join(", ")).join("; ")
  return { reason: `${formatAddress(address.family, address.value)} is outside the pool (${where})` }
}

export const describeRange = (r: Range): string =>
  `${formatAddress(r.subnet.family, r.start)}-${formatAddress(r.subnet.family, r.end)} in ${r.subnet.text}`

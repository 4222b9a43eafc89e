import { Ip, Ipam, resolvePool, type Pool } from "@containerscale/core"
import { Effect, Result } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { decodeRequest, DriverError, ReleaseAddress, ReleasePool, RequestAddress, RequestPool } from "./protocol.ts"
import type { PoolRecord, Store } from "./store.ts"

/**
 * The IpamDriver half: pools persist in the store, addresses in the context's Ipam (one store per
 * pool under `<state-dir>/docker/ipam/<PoolID>`), so nothing is handed out twice across restarts.
 */

export const LOCAL_SPACE = "containerscale-local"
export const GLOBAL_SPACE = "containerscale-global"
/** Where pools are chosen when `docker network create` gives no --subnet: /24s of 10.240.0.0/12. */
export const DEFAULT_RANGE = "10.240.0.0/12"
export const DEFAULT_POOL_PREFIX = 24
const GATEWAY_TYPE = "com.docker.network.gateway"

const fail = (message: string) => Effect.fail(new DriverError({ message }))

interface V4 {
  readonly network: bigint
  readonly last: bigint
  readonly prefix: number
  readonly text: string
}

const parseV4Subnet = (text: string, what: string): V4 => {
  const parsed = Ip.parseSubnet(text)
  if (Result.isFailure(parsed)) throw new DriverError({ message: `${what}: ${parsed.failure}` })
  const s = parsed.success
  if (s.family !== 4) throw new DriverError({ message: `${what} ${text} is IPv6: containerscale's IPAM hands out IPv4 only` })
  const canonical = `${Ip.formatAddress(4, s.network)}/${s.prefix}`
  if (text !== canonical) throw new DriverError({ message: `${what} ${text} has host bits set: use ${canonical}` })
  if (s.prefix > 30) throw new DriverError({ message: `${what} ${text} is too small: use a /30 or larger` })
  return { network: s.network, last: s.last, prefix: s.prefix, text: canonical }
}

const overlap = (a: V4, b: V4) => a.network <= b.last && b.network <= a.last

const ipOf = (text: string): bigint => {
  const parsed = Ip.parseAddress(text)
  if (Result.isFailure(parsed) || parsed.success.family !== 4) throw new DriverError({ message: `"${text}" is not an IPv4 address` })
  return parsed.success.value
}

export const poolOf = (p: PoolRecord): Pool => {
  const subnet = parseV4Subnet(p.subnet, "pool")
  let range: { rangeStart?: string; rangeEnd?: string } = {}
  if (p.subPool !== undefined) {
    const sub = parseV4Subnet(p.subPool, "sub-pool")
    const start = sub.network > subnet.network ? sub.network : subnet.network + 1n
    const end = sub.last < subnet.last ? sub.last : subnet.last - 1n
    range = { rangeStart: Ip.formatAddress(4, start), rangeEnd: Ip.formatAddress(4, end) }
  }
  const resolved = resolvePool({ ranges: [[{ subnet: subnet.text, gateway: p.gateway, ...range }]] })
  if (Result.isFailure(resolved)) throw new DriverError({ message: resolved.failure.message })
  return resolved.success
}

const prefixOf = (p: PoolRecord) => Number(p.subnet.split("/")[1])

export interface IpamDriver {
  readonly capabilities: () => unknown
  readonly defaultAddressSpaces: () => unknown
  readonly requestPool: (body: unknown) => Effect.Effect<unknown, DriverError>
  readonly releasePool: (body: unknown) => Effect.Effect<unknown, DriverError>
  readonly requestAddress: (body: unknown) => Effect.Effect<unknown, DriverError>
  readonly releaseAddress: (body: unknown) => Effect.Effect<unknown, DriverError>
}

export const makeIpamDriver = Effect.fnUntraced(function*(options: {
  readonly store: Store
  /** subnets already routed on the node (other than default): a chosen pool avoids them */
  readonly routed: () => Effect.Effect<ReadonlyArray<string>>
}): Effect.fn.Return<IpamDriver, never, Ipam> {
  const { store } = options
  const ipam = yield* Ipam
  const dataDir = store.ipamDir
  const lift = <A>(f: () => A) => Effect.try({ try: f, catch: (e) => e instanceof DriverError ? e : new DriverError({ message: String((e as Error).message ?? e) }) })
  const core = <A>(e: Effect.Effect<A, { readonly message: string }>) => Effect.mapError(e, (x) => new DriverError({ message: x.message }))
  const pool = (id: unknown) => {
    const p = typeof id === "string" ? store.pools.get(id) : undefined
    return p === undefined
      ? fail(`unknown pool ID ${JSON.stringify(id)}: it was released, or the driver's state directory (${store.root}) was lost; recreate the network`)
      : Effect.succeed(p)
  }

  return {
    capabilities: () => ({ RequiresMACAddress: false, RequiresRequestReplay: false }),
    defaultAddressSpaces: () => ({ LocalDefaultAddressSpace: LOCAL_SPACE, GlobalDefaultAddressSpace: GLOBAL_SPACE }),

    requestPool: (body) =>
      Effect.gen(function*() {
        const req = yield* decodeRequest(RequestPool)(body)
        const wanted = req.Pool ?? ""
        const subPool = req.SubPool === "" || req.SubPool === null ? undefined : req.SubPool
        if (req.V6 === true && wanted === "") {
          return yield* fail(`containerscale's IPAM hands out IPv4 pools only: create the network without --ipv6`)
        }
        if (wanted === "" && subPool !== undefined) return yield* fail(`--ip-range needs --subnet`)
        const existing = [...store.pools.values()].map((p) => ({ p, s: parseV4Subnet(p.subnet, "pool") }))
        let subnet: V4
        if (wanted !== "") {
          subnet = yield* lift(() => parseV4Subnet(wanted, "subnet"))
          if (subPool !== undefined) {
            const sub = yield* lift(() => parseV4Subnet(subPool, "--ip-range"))
            if (sub.network < subnet.network || sub.last > subnet.last) return yield* fail(`--ip-range ${subPool} is outside --subnet ${wanted}`)
          }
          const same = existing.find(({ p }) => p.subnet === subnet.text && p.subPool === subPool)
          if (same !== undefined) {
            const p = { ...same.p, refs: same.p.refs + 1 }
            yield* lift(() => store.putPool(p))
            return { PoolID: p.id, Pool: p.subnet, Data: { [GATEWAY_TYPE]: `${p.gateway}/${subnet.prefix}` } }
          }
          const clash = existing.find(({ s }) => overlap(s, subnet))
          if (clash !== undefined) {
            return yield* fail(
              `subnet ${subnet.text} overlaps pool ${clash.p.subnet} of another containerscale network: choose a subnet outside ${clash.p.subnet}, ` +
                `or leave --subnet out and the driver picks a free /${DEFAULT_POOL_PREFIX} of ${DEFAULT_RANGE}`
            )
          }
        } else {
          const range = parseV4Subnet(DEFAULT_RANGE, "range")
          const routed = (yield* options.routed()).flatMap((r) => {
            try {
              const s = Ip.parseSubnet(r.includes("/") ? r : `${r}/32`)
              return Result.isSuccess(s) && s.success.family === 4 ? [{ network: s.success.network, last: s.success.last, prefix: s.success.prefix, text: r }] : []
            } catch {
              return []
            }
          })
          const size = 1n << BigInt(32 - DEFAULT_POOL_PREFIX)
          let found: V4 | undefined
          for (let n = range.network; n + size - 1n <= range.last; n += size) {
            const c: V4 = { network: n, last: n + size - 1n, prefix: DEFAULT_POOL_PREFIX, text: `${Ip.formatAddress(4, n)}/${DEFAULT_POOL_PREFIX}` }
            if (existing.some(({ s }) => overlap(s, c)) || routed.some((r) => overlap(r, c))) continue
            found = c
            break
          }
          if (found === undefined) return yield* fail(`no free /${DEFAULT_POOL_PREFIX} left in ${DEFAULT_RANGE}: give --subnet, or remove unused networks`)
          subnet = found
        }
        const id = `cs-${subnet.text.replace("/", "-")}${subPool === undefined ? "" : `-${subPool.replace("/", "-")}`}`
        const record: PoolRecord = {
          id,
          addressSpace: req.AddressSpace ?? LOCAL_SPACE,
          subnet: subnet.text,
          subPool,
          gateway: Ip.formatAddress(4, subnet.network + 1n),
          refs: 1
        }
        yield* lift(() => poolOf(record))
        // a store left from an earlier pool of that subnet must not hold addresses any more
        yield* lift(() => fs.rmSync(path.join(store.ipamDir, id), { recursive: true, force: true }))
        yield* lift(() => store.putPool(record))
        return { PoolID: id, Pool: subnet.text, Data: { [GATEWAY_TYPE]: `${record.gateway}/${subnet.prefix}` } }
      }),

    releasePool: (body) =>
      Effect.gen(function*() {
        const req = yield* decodeRequest(ReleasePool)(body)
        const p = req.PoolID == null ? undefined : store.pools.get(req.PoolID)
        if (p === undefined) return {}
        if (p.refs > 1) {
          yield* lift(() => store.putPool({ ...p, refs: p.refs - 1 }))
          return {}
        }
        yield* lift(() => {
          store.deletePool(p.id)
          fs.rmSync(path.join(store.ipamDir, p.id), { recursive: true, force: true })
        })
        return {}
      }),

    requestAddress: (body) =>
      Effect.gen(function*() {
        const req = yield* decodeRequest(RequestAddress)(body)
        const p = yield* pool(req.PoolID)
        const asked = req.Address === "" || req.Address === null ? undefined : req.Address
        const prefix = prefixOf(p)
        if (req.Options?.["RequestAddressType"] === GATEWAY_TYPE) {
          if (asked === undefined || asked === p.gateway) return { Address: `${p.gateway}/${prefix}`, Data: {} }
          const value = yield* lift(() => ipOf(asked))
          const subnet = parseV4Subnet(p.subnet, "pool")
          if (value <= subnet.network || value >= subnet.last) return yield* fail(`gateway ${asked} is not a host address of ${p.subnet}`)
          const used = yield* core(ipam.usage({ network: p.id, dataDir, pool: poolOf(p) }))
          if (used.some((u) => u.allocations.some((a) => a.ip === asked))) return yield* fail(`gateway ${asked} is already in use in ${p.subnet}`)
          yield* lift(() => store.putPool({ ...p, gateway: asked }))
          return { Address: `${asked}/${prefix}`, Data: {} }
        }
        const attachment = { containerId: `addr-${crypto.randomBytes(8).toString("hex")}`, ifname: "docker" }
        const leases = yield* core(ipam.allocate({ network: p.id, dataDir, pool: poolOf(p), ...attachment, requested: asked === undefined ? [] : [asked] }))
        const lease = leases.find((l) => l.family === 4)
        if (lease === undefined) return yield* fail(`no address returned from ${p.subnet}`)
        return { Address: `${lease.ip}/${prefix}`, Data: {} }
      }),

    releaseAddress: (body) =>
      Effect.gen(function*() {
        const req = yield* decodeRequest(ReleaseAddress)(body)
        const p = req.PoolID == null ? undefined : store.pools.get(req.PoolID)
        const ip = req.Address?.split("/")[0]
        if (p === undefined || ip === undefined || ip === p.gateway) return {}
        const used = yield* core(ipam.usage({ network: p.id, dataDir, pool: yield* lift(() => poolOf(p)) }))
        for (const a of used.flatMap((u) => u.allocations).filter((a) => a.ip === ip)) {
          yield* core(ipam.release({ network: p.id, dataDir, containerId: a.containerId, ifname: a.ifname }))
        }
        return {}
      })
  }
})

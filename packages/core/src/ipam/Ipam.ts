import { Context, Duration, Effect, Layer, Result } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { DATA_DIR_RULE } from "../config.ts"
import { AddressNotInPool, InvalidEnvironment, InvalidNetworkConfig, type IpamError, NotAvailable } from "../errors.ts"
import { type Address, type Family, formatAddress, parseRequestedAddress } from "../ip.ts"
import { type Pool, rangeOf, usableSize } from "../pool.ts"
import { allocate, type Lease, leaseOf } from "./allocator.ts"
import { IpamStore } from "./IpamStore.ts"
import { attachmentKey, type Change, type Transaction } from "./state.ts"
import { unsafeStoreReasons } from "./store.ts"

/**
 * The IPAM service: hands out, frees and lists container addresses. It runs the allocator
 * (allocator.ts) as pure transactions against an `IpamStore` (IpamStore.ts), one per network.
 *
 * - `Ipam.layer(options)`: on the on-disk journal; needs nothing. What the plugins' `main`s provide.
 * - `Ipam.layerWithStore(options)`: on whichever `IpamStore` the caller provides, e.g.
 *   `Ipam.layerWithStore().pipe(Layer.provide(IpamStore.layerDisk))`.
 * - `layerIpamMemory(options)` in memoryStore.ts: on an in-memory store, for unit tests (a
 *   separate module, so the live path does not load it).
 * - `Ipam.make(options, store?)`: a plain service object (disk by default) for code that is not
 *   built from layers: the agent's metrics registry and the Docker IPAM driver.
 */

export type { Lease } from "./allocator.ts"
export { IpamStore, type IpamStoreError } from "./IpamStore.ts"
export { DAMAGE_FILE, inspectStore, type StoreInspection, unsafeStoreReasons } from "./store.ts"

export interface Attachment {
  readonly containerId: string
  readonly ifname: string
}

export interface StoreRef {
  /** the network's name: its store is `<dataDir>/<network>` */
  readonly network: string
  /** overrides the layer's data directory (the `dataDir` key of an `ipam` section) */
  readonly dataDir?: string | undefined
}

export interface AllocateRequest extends StoreRef, Attachment {
  readonly pool: Pool
  /** specific addresses ("10.0.0.5" or "10.0.0.5/24"), at most one per range set */
  readonly requested?: ReadonlyArray<string> | undefined
}

export interface ReleasedAddress extends Attachment {
  readonly ip: string
}

export interface RangeSetUsage {
  readonly rangeSet: number
  readonly family: Family
  readonly ranges: ReadonlyArray<string>
  /** addresses that can be handed out (network, gateway, broadcast and exclusions left out) */
  readonly size: bigint
  readonly used: number
  readonly allocations: ReadonlyArray<ReleasedAddress>
}

export interface IpamOptions {
  /** where stores live unless a request names its own; default /var/lib/containerscale/ipam */
  readonly dataDir: string
  /** how long to wait for another process's lock before failing with code 11; default 30 s */
  readonly lockTimeout: Duration.Duration
  /** the random source of the `random` strategy */
  readonly random: () => number
}

export const defaultIpamOptions: IpamOptions = {
  dataDir: "/var/lib/containerscale/ipam",
  lockTimeout: Duration.seconds(30),
  random: Math.random
}

/** The CNI rules for container ids and interface names, which also keep store lines and paths safe. */
const CONTAINER_ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/
const NETWORK_NAME = CONTAINER_ID

/** A network's store is a folder named after it: at most a file name's 255 bytes. */
const MAX_NETWORK_NAME = 255

export const validateNetworkName = (name: string): InvalidNetworkConfig | undefined =>
  NETWORK_NAME.test(name) && name.length <= MAX_NETWORK_NAME ? undefined : new InvalidNetworkConfig({
    message: `network name "${name.slice(0, 64)}${name.length > 64 ? "…" : ""}" is invalid: use at most ${MAX_NETWORK_NAME} ` +
      `letters, digits, "_", "." and "-", starting with a letter or digit`
  })

export const validateAttachment = (a: Attachment): InvalidEnvironment | undefined => {
  if (!CONTAINER_ID.test(a.containerId)) {
    return new InvalidEnvironment({
      message: `container id "${a.containerId}" is invalid: it must start with a letter or digit and hold only letters, digits, "_", "." and "-"`
    })
  }
  if (a.ifname.includes("\uFFFD")) {
    // the environment is read as UTF-8: two names that are not would both read as U+FFFD
    return new InvalidEnvironment({ message: `interface name ${JSON.stringify(a.ifname)} is not valid UTF-8: use an ASCII name` })
  }
  if (
    a.ifname.length === 0 || Buffer.byteLength(a.ifname) > 15 || a.ifname === "." || a.ifname === ".." ||
    /[/:\s]/.test(a.ifname)
  ) {
    return new InvalidEnvironment({
      message: `interface name "${a.ifname}" is invalid: use 1-15 bytes without "/", ":" or white space, and not "." or ".."`
    })
  }
  return undefined
}

/**
 * A data directory must be absolute: a relative (or empty) one names a different store in each
 * working directory the plugin runs in, and so hands out the same address twice.
 */
export const invalidDataDir = (dataDir: string): InvalidNetworkConfig | undefined =>
  path.isAbsolute(dataDir) ? undefined : new InvalidNetworkConfig({
    message: `ipam: "dataDir" ${JSON.stringify(dataDir.slice(0, 200))} is not an absolute path: ${DATA_DIR_RULE}`
  })

/**
 * STATUS: the data directory exists (or can be made) and is writable, and the plugins would not
 * refuse the store of `network` in it (a symbolic link, another owner, writable by others), or of
 * any network when none is named.
 */
export const checkDataDir = Effect.fnUntraced(function*(
  dataDir: string | undefined,
  network?: string | undefined
): Effect.fn.Return<void, NotAvailable | InvalidNetworkConfig> {
  const dir = dataDir ?? defaultIpamOptions.dataDir
  const invalid = invalidDataDir(dir)
  if (invalid !== undefined) return yield* invalid
  const reason = yield* Effect.try({
    try: () => {
      fs.mkdirSync(dir, { recursive: true, mode: 0o755 })
      fs.accessSync(dir, fs.constants.W_OK)
      const stores = network !== undefined && validateNetworkName(network) === undefined
        ? [network]
        : fs.readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory() || e.isSymbolicLink()).map((e) => e.name)
      for (const name of stores) {
        const reasons = unsafeStoreReasons(path.join(dir, name))
        if (reasons.length > 0) return reasons[0]
      }
      return undefined
    },
    catch: (e) =>
      new NotAvailable({
        message: `the IPAM data directory ${dir} is not writable (${e instanceof Error ? e.message : String(e)}): ` +
          `fix its permissions or set "dataDir" in the ipam section`
      })
  })
  if (reason !== undefined) {
    return yield* new NotAvailable({
      message: `the plugin refuses an IPAM store: ${reason}. A store's folder and files must belong to the plugin's user, ` +
        `not be writable by group or others, and not be symbolic links: find out who made it so, then fix it (chown, chmod go-w) or remove it`
    })
  }
})

export class Ipam extends Context.Service<Ipam, {
  /** Hands the attachment one address per range set, or returns what it already holds. */
  readonly allocate: (request: AllocateRequest) => Effect.Effect<ReadonlyArray<Lease>, IpamError>
  /** Frees every address the attachment holds; succeeds when it holds none. */
  readonly release: (request: StoreRef & Attachment) => Effect.Effect<ReadonlyArray<string>, IpamError>
  /** What the attachment holds in this pool. */
  readonly leases: (request: StoreRef & Attachment & { readonly pool: Pool }) => Effect.Effect<ReadonlyArray<Lease>, IpamError>
  /** Frees every address whose attachment is not in `valid`. */
  readonly gc: (
    request: StoreRef & { readonly valid: ReadonlyArray<Attachment> }
  ) => Effect.Effect<ReadonlyArray<ReleasedAddress>, IpamError>
  /** Size and use of each range set. */
  readonly usage: (request: StoreRef & { readonly pool: Pool }) => Effect.Effect<ReadonlyArray<RangeSetUsage>, IpamError>
}>()("@containerscale/core/Ipam") {
  /** A plain service object on `store` (default: the on-disk journal). */
  static readonly make = (options: Partial<IpamOptions> = {}, store: IpamStore["Service"] = IpamStore.disk): Ipam["Service"] =>
    makeIpam({ ...defaultIpamOptions, ...options }, store)

  /** The Ipam on the `IpamStore` of the context. */
  static readonly layerWithStore = (options: Partial<IpamOptions> = {}): Layer.Layer<Ipam, never, IpamStore> =>
    Layer.effect(Ipam, Effect.map(Effect.service(IpamStore), (store) => Ipam.make(options, store)))

  /** The Ipam on the on-disk journal. */
  static readonly layer = (options: Partial<IpamOptions> = {}): Layer.Layer<Ipam> =>
    Ipam.layerWithStore(options).pipe(Layer.provide(IpamStore.layerDisk))
}

const makeIpam = (options: IpamOptions, store: IpamStore["Service"]): Ipam["Service"] => {
  const storeDir = (ref: StoreRef) => {
    const dataDir = ref.dataDir ?? options.dataDir
    const invalid = validateNetworkName(ref.network) ?? invalidDataDir(dataDir)
    return invalid === undefined ? Effect.succeed(path.join(dataDir, ref.network)) : Effect.fail(invalid)
  }
  const checked = (a: Attachment) => {
    const invalid = validateAttachment(a)
    return invalid === undefined ? Effect.void : Effect.fail(invalid)
  }
  const run = <A, E>(ref: StoreRef, f: Transaction<A, E>, create = false) =>
    Effect.flatMap(storeDir(ref), (dir) => store.transact(dir, { lockTimeout: options.lockTimeout, create }, f))

  return Ipam.of({
    allocate: Effect.fnUntraced(function*(request) {
      yield* checked(request)
      const requested: Array<{ address: Address; prefix?: number | undefined }> = []
      for (const text of request.requested ?? []) {
        const parsed = parseRequestedAddress(text)
        if (Result.isFailure(parsed)) {
          return yield* new AddressNotInPool({ message: `requested address: ${parsed.failure}` })
        }
        requested.push(parsed.success)
      }
      return yield* run(request, (state) =>
        allocate(state, {
          pool: request.pool,
          containerId: request.containerId,
          ifname: request.ifname,
          requested,
          random: options.random
        }), true)
    }),

    release: Effect.fnUntraced(function*(request) {
      yield* checked(request)
      const dir = yield* storeDir(request)
      return yield* store.transact(dir, { lockTimeout: options.lockTimeout, create: false }, (state) => {
        const held = state.byAttachment.get(attachmentKey(request.containerId, request.ifname)) ?? []
        const changes: Array<Change> = []
        const ips: Array<string> = []
        for (const c of held) {
          const h = state.byCode.get(c)!
          changes.push({ op: "-", family: h.family, value: h.value })
          ips.push(formatAddress(h.family, h.value))
        }
        return Result.succeed({ value: ips, changes })
      }).pipe(
        // A damaged store must not block container removal: free nothing (its file stays as it is,
        // for inspection, and allocate keeps failing) and note it where doctor looks.
        Effect.catchTag("StoreCorrupt", (e) =>
          Effect.as(
            store.recordDamage(dir, `release of ${request.containerId} (${request.ifname}) freed nothing: ${e.message.split(". ")[0]}`),
            [] as ReadonlyArray<string>
          ))
      )
    }),

    leases: Effect.fnUntraced(function*(request) {
      yield* checked(request)
      return yield* run(request, (state) => {
        const leases: Array<Lease> = []
        for (const c of state.byAttachment.get(attachmentKey(request.containerId, request.ifname)) ?? []) {
          const h = state.byCode.get(c)!
          for (const set of request.pool.rangeSets) {
            const range = set.family === h.family ? rangeOf(set, h.value) : undefined
            if (range !== undefined) leases.push(leaseOf(set, range, h.value))
          }
        }
        return Result.succeed({ value: leases, changes: [] })
      })
    }),

    gc: Effect.fnUntraced(function*(request) {
      const valid = new Set(request.valid.map((a) => attachmentKey(a.containerId, a.ifname)))
      return yield* run(request, (state) => {
        const changes: Array<Change> = []
        const released: Array<ReleasedAddress> = []
        for (const h of state.byCode.values()) {
          if (valid.has(attachmentKey(h.containerId, h.ifname))) continue
          changes.push({ op: "-", family: h.family, value: h.value })
          released.push({ containerId: h.containerId, ifname: h.ifname, ip: formatAddress(h.family, h.value) })
        }
        return Result.succeed({ value: released, changes })
      })
    }),

    usage: (request) =>
      run(request, (state) => {
        const usage = request.pool.rangeSets.map((set): RangeSetUsage => {
          const holders = [...state.byCode.values()]
            .filter((h) => h.family === set.family && rangeOf(set, h.value) !== undefined)
            .sort((a, b) => (a.value < b.value ? -1 : 1))
          return {
            rangeSet: set.index,
            family: set.family,
            ranges: set.ranges.map((r) => `${formatAddress(set.family, r.start)}-${formatAddress(set.family, r.end)}`),
            size: usableSize(request.pool, set),
            used: holders.length,
            allocations: holders.map((h) => ({ containerId: h.containerId, ifname: h.ifname, ip: formatAddress(h.family, h.value) }))
          }
        })
        return Result.succeed({ value: usage, changes: [] })
      })
  })
}

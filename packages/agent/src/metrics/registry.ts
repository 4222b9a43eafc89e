import { Ipam, packageVersion, type Pool, type PluginEvent } from "@containerscale/core"
import { Duration, Effect } from "effect"
import * as path from "node:path"
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client"

/**
 * The agent's Prometheus metrics: what the CNI plugin binaries did (fed from the event journal by
 * the EventsReader), the IPAM pools (read from their stores on scrape), the tailnet nodes (from a
 * callback the agent provides), the agent's own work (counters and timestamps the agent sets),
 * its build, and the process metrics every Prometheus client exports.
 */

/** An IPAM store an event named: `<dataDir>/<network>`. */
export interface IpamStoreRef {
  readonly network: string
  /** absolute */
  readonly dataDir: string
}

/** The pool of a store, to compute its utilization; undefined when it is not known. */
export type PoolResolver = (store: IpamStoreRef) => Pool | undefined | Promise<Pool | undefined>

/** Tailnet node counts by state (e.g. { running: 3, starting: 1, stopped: 0 }). */
export type TailnetNodesSource = () => Readonly<Record<string, number>> | Promise<Readonly<Record<string, number>>>

export interface MetricsOptions {
  /** registers into this registry; default a new one */
  readonly registry?: Registry
  /** resolves the pool of each IPAM store the events name; without it the pool gauges stay empty */
  readonly pools?: PoolResolver
  /** counts tailnet nodes by state on scrape (member records + LocalAPI status) */
  readonly tailnetNodes?: TailnetNodesSource
  /** how long a scrape waits for an IPAM store (its lock); default 1 s */
  readonly lockTimeout?: Duration.Input
  /** buckets of containerscale_cni_setup_duration_seconds */
  readonly setupBuckets?: ReadonlyArray<number>
}

export interface ContainerscaleMetrics {
  readonly registry: Registry
  /** counts one journal event (the EventsReader calls it) */
  readonly observe: (event: PluginEvent) => void
  /** an IPAM store whose pool gauges are computed on scrape */
  readonly addStore: (store: IpamStoreRef) => void
  readonly stores: () => ReadonlyArray<IpamStoreRef>
  /** journal lines that were not events (torn or damaged) */
  readonly invalidEvents: Counter
  /** the agent's supervisor increments it when it restarts a tailscaled */
  readonly tailscaledRestarts: Counter
  /** the agent increments it after each reconcile pass: `reconcile.inc({ result: "ok" | "error" })` */
  readonly reconcile: Counter<"result">
  /** the agent sets it when a pass of one of its loops succeeds: `lastSuccess.set({ loop }, seconds)` */
  readonly lastSuccess: Gauge<"loop">
  /** sets (or replaces) the callback of containerscale_tailnet_nodes */
  readonly setTailnetNodes: (source: TailnetNodesSource | undefined) => void
  /** sets (or replaces) the pool resolver */
  readonly setPools: (pools: PoolResolver | undefined) => void
}

export const METRICS_PREFIX = "containerscale_"

/** From 10 ms (a router-mode ADD is ~50 ms) to a minute (a member joining a slow control server). */
export const DEFAULT_SETUP_BUCKETS: ReadonlyArray<number> = [0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

interface PoolSample {
  readonly network: string
  readonly family: "ipv4" | "ipv6"
  readonly used: number
  readonly size: number
  readonly ratio: number
}

const storeKey = (s: IpamStoreRef) => `${s.dataDir}\0${s.network}`

/** The metrics; the pool gauges read the stores through the context's `Ipam`. */
export const makeMetrics = Effect.fnUntraced(function*(options: MetricsOptions = {}): Effect.fn.Return<ContainerscaleMetrics, never, Ipam> {
  const ipam = yield* Ipam
  const lockTimeout = Duration.fromInputUnsafe(options.lockTimeout ?? Duration.seconds(1))
  const registry = options.registry ?? new Registry()
  const registers = [registry]
  collectDefaultMetrics({ register: registry })
  new Gauge({
    name: `${METRICS_PREFIX}build_info`,
    help: "Always 1: the agent's version and the runtime it runs on",
    labelNames: ["version", "runtime"] as const,
    registers
  }).set({ version: packageVersion(import.meta.url), runtime: process.versions["bun"] === undefined ? `node ${process.version}` : `bun ${process.versions["bun"]}` }, 1)
  let pools = options.pools
  let tailnetNodes = options.tailnetNodes
  const stores = new Map<string, IpamStoreRef>()

  const operations = new Counter({
    name: `${METRICS_PREFIX}cni_operations_total`,
    help: "CNI calls the plugin binaries answered, by plugin, command, mode and result",
    labelNames: ["plugin", "command", "mode", "result"] as const,
    registers
  })
  const errors = new Counter({
    name: `${METRICS_PREFIX}cni_errors_total`,
    help: "CNI calls that failed, by plugin, CNI error code and error type",
    labelNames: ["plugin", "code", "type"] as const,
    registers
  })
  const setup = new Histogram({
    name: `${METRICS_PREFIX}cni_setup_duration_seconds`,
    help: "Time from the plugin's start to its answer, of successful ADDs, by mode",
    labelNames: ["mode"] as const,
    buckets: [...(options.setupBuckets ?? DEFAULT_SETUP_BUCKETS)],
    registers
  })
  const allocations = new Counter({
    name: `${METRICS_PREFIX}ipam_allocations_total`,
    help: "Addresses the IPAM handed out, by network",
    labelNames: ["network"] as const,
    registers
  })
  const releases = new Counter({
    name: `${METRICS_PREFIX}ipam_releases_total`,
    help: "Addresses the IPAM freed (DEL, GC, failed ADDs undoing themselves), by network",
    labelNames: ["network"] as const,
    registers
  })

  const errorsSeen = new Counter({
    name: `${METRICS_PREFIX}metrics_collect_errors_total`,
    help: "Failures while collecting a metric on scrape, by source (ipam, tailnet)",
    labelNames: ["source"] as const,
    registers
  })

  // One reading of the stores serves every pool gauge of a scrape.
  let sampling: { readonly at: number; readonly samples: Promise<ReadonlyArray<PoolSample>> } | undefined
  const samplePools = (): Promise<ReadonlyArray<PoolSample>> => {
    const now = Date.now()
    if (sampling !== undefined && now - sampling.at < 500) return sampling.samples
    const samples = (async () => {
      const fullest = new Map<string, PoolSample>()
      for (const store of stores.values()) {
        try {
          const pool = pools === undefined ? undefined : await pools(store)
          if (pool === undefined) continue
          const usage = await Effect.runPromise(ipam.usage({ network: store.network, dataDir: store.dataDir, pool }).pipe(Effect.timeout(lockTimeout)))
          // per family, the fullest range set: an ADD fails as soon as any of its range sets is exhausted
          for (const set of usage) {
            const size = Number(set.size)
            const sample: PoolSample = { network: store.network, family: set.family === 6 ? "ipv6" : "ipv4", used: set.used, size, ratio: size > 0 ? set.used / size : 1 }
            const key = `${sample.network}\0${sample.family}`
            const prev = fullest.get(key)
            if (prev === undefined || sample.ratio > prev.ratio) fullest.set(key, sample)
          }
        } catch {
          errorsSeen.inc({ source: "ipam" })
        }
      }
      return [...fullest.values()]
    })()
    sampling = { at: now, samples }
    return samples
  }

  const poolGauge = (name: string, help: string, value: (s: PoolSample) => number) =>
    new Gauge({
      name: `${METRICS_PREFIX}${name}`,
      help,
      labelNames: ["network", "family"] as const,
      registers,
      async collect() {
        this.reset()
        for (const s of await samplePools()) this.set({ network: s.network, family: s.family }, value(s))
      }
    })
  poolGauge("ipam_pool_used_addresses", "Addresses in use in the network's pool, per family (its fullest range set; read from the IPAM store on scrape)", (s) => s.used)
  poolGauge("ipam_pool_size_addresses", "Addresses the network's pool can hand out, per family (its fullest range set)", (s) => s.size)
  poolGauge("ipam_pool_utilization_ratio", "Used over usable addresses of the network's pool, per family (its fullest range set), 0 to 1", (s) => s.ratio)
  new Gauge({
    name: `${METRICS_PREFIX}tailnet_nodes`,
    help: "Containers on the tailnet as their own node (member mode), by state",
    labelNames: ["state"] as const,
    registers,
    async collect() {
      this.reset()
      if (tailnetNodes === undefined) return
      try {
        for (const [state, n] of Object.entries(await tailnetNodes())) this.set({ state }, n)
      } catch {
        errorsSeen.inc({ source: "tailnet" })
      }
    }
  })

  const invalidEvents = new Counter({
    name: `${METRICS_PREFIX}events_invalid_total`,
    help: "Lines of the event journal that were not events (torn by a crashed writer, or damaged)",
    registers
  })
  const tailscaledRestarts = new Counter({
    name: `${METRICS_PREFIX}tailscaled_restarts_total`,
    help: "tailscaled processes the agent's supervisor restarted",
    registers
  })
  const reconcile = new Counter({
    name: `${METRICS_PREFIX}agent_reconcile_total`,
    help: "Reconcile passes of the agent, by result",
    labelNames: ["result"] as const,
    registers
  })

  const lastSuccess = new Gauge({
    name: `${METRICS_PREFIX}agent_last_success_timestamp_seconds`,
    help: "When a pass of each of the agent's loops (router, gc, supervise, node-tailscaled) last succeeded, in Unix seconds",
    labelNames: ["loop"] as const,
    registers
  })

  const addStore = (store: IpamStoreRef) => {
    const ref = { network: store.network, dataDir: path.resolve(store.dataDir) }
    const key = storeKey(ref)
    if (!stores.has(key)) stores.set(key, ref)
  }

  const observe = (e: PluginEvent) => {
    operations.inc({ plugin: e.plugin, command: e.command, mode: e.mode, result: e.result })
    if (e.result === "error") {
      errors.inc({ plugin: e.plugin, code: e.code === undefined ? "" : String(e.code), type: e.error ?? "" })
    } else if (e.command === "ADD") {
      setup.observe({ mode: e.mode }, e.ms / 1000)
    }
    if (e.network !== undefined) {
      if (e.allocated !== undefined && e.allocated > 0) allocations.inc({ network: e.network }, e.allocated)
      if (e.released !== undefined && e.released > 0) releases.inc({ network: e.network }, e.released)
      if (e.dataDir !== undefined) addStore({ network: e.network, dataDir: e.dataDir })
    }
  }

  return {
    registry,
    observe,
    addStore,
    stores: () => [...stores.values()],
    invalidEvents,
    tailscaledRestarts,
    reconcile,
    lastSuccess,
    setTailnetNodes: (source) => {
      tailnetNodes = source
    },
    setPools: (resolver) => {
      pools = resolver
      sampling = undefined
    }
  }
})

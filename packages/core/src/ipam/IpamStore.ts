import { Context, Effect, Layer } from "effect"
import type { IoFailure, StoreBusy, StoreCorrupt } from "../errors.ts"
import type { Transaction, TransactOptions } from "./state.ts"
import { recordDamage, transact } from "./store.ts"

/**
 * Where the Ipam keeps the addresses it hands out: one store per network directory
 * (`<dataDir>/<network>`), against which it runs pure transactions (state.ts).
 *
 * - `IpamStore.layerDisk`: the checksummed on-disk journal of store.ts (file lock, atomic appends,
 *   crash-safe replay). What the plugins, the agent and the Docker driver use.
 * - `layerMemoryStore` in memoryStore.ts: a Map of directory -> state, for unit tests. It lives in
 *   its own module so the live path never loads it.
 */

export type IpamStoreError = StoreBusy | StoreCorrupt | IoFailure

export class IpamStore extends Context.Service<IpamStore, {
  /**
   * Runs `f` atomically on the current state of the store in `dir` and records the changes it
   * returns (none when it fails). Without `create`, a missing store reads as empty and stays missing.
   */
  readonly transact: <A, E>(dir: string, options: TransactOptions, f: Transaction<A, E>) => Effect.Effect<A, E | IpamStoreError>
  /**
   * Notes, where `doctor` finds it, that an operation on the store in `dir` found it damaged
   * (StoreCorrupt) and went on without it, e.g. a release that freed nothing. Never fails.
   */
  readonly recordDamage: (dir: string, note: string) => Effect.Effect<void>
}>()("@containerscale/core/IpamStore") {
  /** The on-disk journal, as a plain service object (what `Ipam.make` uses by default). */
  static readonly disk: IpamStore["Service"] = {
    transact,
    recordDamage: (dir, note) => Effect.sync(() => recordDamage(dir, note))
  }

  /** The on-disk journal: `<dir>/lock`, `<dir>/allocations` and, once damage was seen, `<dir>/damaged`. */
  static readonly layerDisk: Layer.Layer<IpamStore> = Layer.succeed(IpamStore, IpamStore.disk)
}

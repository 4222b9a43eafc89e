import { Effect, Layer, Result } from "effect"
import { Ipam, type IpamOptions } from "./Ipam.ts"
import { IpamStore } from "./IpamStore.ts"
import { applyChange, emptyState, type StoreState } from "./state.ts"

/**
 * An `IpamStore` in memory, for unit tests: a Map of store directory -> state, nothing on disk.
 * Same semantics as the journal: a transaction sees the state of earlier ones and records its
 * changes only when it succeeds; with `create` the store comes to exist (even if the transaction
 * then fails), without it a missing store reads as empty and nothing is recorded. Transactions are
 * synchronous, so they run one at a time. Not imported by the live path.
 */
export const makeMemoryStore = (): IpamStore["Service"] => {
  const stores = new Map<string, StoreState>()
  return IpamStore.of({
    transact: (dir, options, f) =>
      Effect.suspend(() => {
        let state = stores.get(dir)
        if (state === undefined && options.create) {
          state = emptyState()
          stores.set(dir, state)
        }
        const outcome = f(state ?? emptyState())
        if (Result.isFailure(outcome)) return Effect.fail(outcome.failure)
        if (state !== undefined) for (const change of outcome.success.changes) applyChange(state, change)
        return Effect.succeed(outcome.success.value)
      }),
    // a store in memory is never damaged
    recordDamage: () => Effect.void
  })
}

/** A fresh, empty memory store each time the layer is built. */
export const layerMemoryStore: Layer.Layer<IpamStore> = Layer.sync(IpamStore, makeMemoryStore)

/** The Ipam on a fresh memory store; the store is provided too, to look into it. */
export const layerIpamMemory = (options: Partial<IpamOptions> = {}): Layer.Layer<Ipam | IpamStore> =>
  Ipam.layerWithStore(options).pipe(Layer.provideMerge(layerMemoryStore))

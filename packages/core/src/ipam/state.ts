import type { Duration, Result } from "effect"
import { code, type Family } from "../ip.ts"
import { markV4, type V4Bitmap } from "./bitmap.ts"

/**
 * The state of one network's IPAM store, as every backend (the disk journal of store.ts, the
 * in-memory store of memoryStore.ts) holds it, and the transactions the Ipam runs against it.
 * Pure: no file system, so the memory backend does not load the journal.
 */

export interface Holder {
  readonly family: Family
  readonly value: bigint
  readonly containerId: string
  readonly ifname: string
  readonly setKey: string
}

export interface StoreState {
  readonly byCode: Map<bigint, Holder>
  /** the taken IPv4 addresses again, for fast scans */
  readonly v4: V4Bitmap
  readonly byAttachment: Map<string, Set<bigint>>
  readonly last: Map<string, bigint>
  lines: number
}

export type Change =
  | { readonly op: "+"; readonly holder: Holder }
  | { readonly op: "-"; readonly family: Family; readonly value: bigint }

/**
 * A transaction: reads the state (and must not change it) and returns its answer and the changes
 * to record. A failure records nothing.
 */
export type Transaction<A, E> = (
  state: StoreState
) => Result.Result<{ readonly value: A; readonly changes: ReadonlyArray<Change> }, E>

export interface TransactOptions {
  /** how long to wait for another process's lock (the disk store; the memory store never waits) */
  readonly lockTimeout: Duration.Duration
  /** create the store when it does not exist yet; otherwise `f` sees an empty state and nothing is written */
  readonly create: boolean
}

export const attachmentKey = (containerId: string, ifname: string) => `${containerId} ${ifname}`

export const emptyState = (): StoreState => ({ byCode: new Map(), v4: new Map(), byAttachment: new Map(), last: new Map(), lines: 0 })

/** Records one change in the state; `lines` counts the changes, live or dead. */
export const applyChange = (state: StoreState, change: Change) => {
  if (change.op === "+") {
    const h = change.holder
    const c = code(h)
    state.byCode.set(c, h)
    if (h.family === 4) markV4(state.v4, Number(h.value), true)
    const key = attachmentKey(h.containerId, h.ifname)
    const set = state.byAttachment.get(key)
    if (set === undefined) state.byAttachment.set(key, new Set([c]))
    else set.add(c)
    state.last.set(h.setKey, c)
  } else {
    const c = code(change)
    const h = state.byCode.get(c)
    if (h === undefined) return
    state.byCode.delete(c)
    if (h.family === 4) markV4(state.v4, Number(h.value), false)
    const key = attachmentKey(h.containerId, h.ifname)
    const set = state.byAttachment.get(key)
    set?.delete(c)
    if (set?.size === 0) state.byAttachment.delete(key)
  }
  state.lines++
}

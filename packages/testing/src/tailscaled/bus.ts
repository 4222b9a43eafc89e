import { randomBytes } from "node:crypto"
import { VERSION } from "./version.ts"

/** The IPN bus: `ipn.Notify` messages for every watch-ipn-bus stream. */

export const NotifyWatchOpt = {
  EngineUpdates: 1n,
  InitialState: 2n,
  InitialPrefs: 4n,
  InitialNetMap: 8n,
  NoPrivateKeys: 16n,
  InitialDriveShares: 32n,
  InitialOutgoingFiles: 64n,
  InitialHealthState: 128n,
  RateLimit: 256n,
  HealthActions: 512n,
  InitialSuggestedExitNode: 1024n,
  InitialClientVersion: 2048n,
  PeerChanges: 4096n,
  NoNetMap: 8192n,
  InitialStatus: 16384n,
  PeerPatches: 32768n,
  InProcessNoDisconnect: 65536n
} as const

const INITIAL_BITS = NotifyWatchOpt.InitialState | NotifyWatchOpt.InitialPrefs | NotifyWatchOpt.InitialNetMap |
  NotifyWatchOpt.InitialDriveShares | NotifyWatchOpt.InitialOutgoingFiles | NotifyWatchOpt.InitialHealthState |
  NotifyWatchOpt.InitialSuggestedExitNode | NotifyWatchOpt.InitialClientVersion | NotifyWatchOpt.InitialStatus

const RATE_LIMIT_INCOMPATIBLE = NotifyWatchOpt.PeerChanges | NotifyWatchOpt.NoNetMap | NotifyWatchOpt.InitialStatus | NotifyWatchOpt.PeerPatches

/** Parses the `mask` query; a string is the 400 error text. */
export const parseMask = (text: string | null): bigint | string => {
  if (text === null || text === "") return 0n
  if (!/^\d+$/.test(text)) return "bad mask"
  const mask = BigInt(text)
  if (mask >= 1n << 64n) return "bad mask"
  if ((mask & NotifyWatchOpt.InProcessNoDisconnect) !== 0n) return "NotifyInProcessNoDisconnect is only valid for in-process IPN bus subscribers"
  const bad = mask & RATE_LIMIT_INCOMPATIBLE
  if ((mask & NotifyWatchOpt.RateLimit) !== 0n && bad !== 0n) {
    const names = (Object.keys(NotifyWatchOpt) as Array<keyof typeof NotifyWatchOpt>)
      .filter((name) => (bad & NotifyWatchOpt[name]) !== 0n)
      .map((name) => `ipn.Notify${name === "EngineUpdates" ? "WatchEngineUpdates" : name}`)
    return `NotifyRateLimit is incompatible with new-style IPN bus subscription bits ${names.length === 1 ? names[0] : `(${names.join(" | ")})`}`
  }
  return mask
}

export const wantsInitial = (mask: bigint) => (mask & INITIAL_BITS) !== 0n
export const has = (mask: bigint, bit: bigint) => (mask & bit) === bit

/** The parts of a Notify a message sets; the rest are sent as Go sends them (null, or left out when omitempty). */
export interface NotifyFields {
  readonly SessionID?: string
  readonly ErrMessage?: string
  readonly LoginFinished?: Record<string, never>
  readonly State?: number
  readonly Prefs?: unknown
  readonly NetMap?: unknown
  readonly SelfChange?: unknown
  readonly InitialStatus?: unknown
  readonly BrowseToURL?: string
  readonly Health?: unknown
}

/** `ipn.Notify` in Go's field order. */
export const formatNotify = (f: NotifyFields) => ({
  Version: VERSION,
  ...(f.SessionID !== undefined ? { SessionID: f.SessionID } : {}),
  ErrMessage: f.ErrMessage ?? null,
  LoginFinished: f.LoginFinished ?? null,
  State: f.State ?? null,
  Prefs: f.Prefs ?? null,
  NetMap: f.NetMap ?? null,
  ...(f.SelfChange !== undefined ? { SelfChange: f.SelfChange } : {}),
  Engine: null,
  BrowseToURL: f.BrowseToURL ?? null,
  DriveShares: null,
  ...(f.Health !== undefined ? { Health: f.Health } : {}),
  ...(f.InitialStatus !== undefined ? { InitialStatus: f.InitialStatus } : {})
})

export interface Watcher {
  readonly mask: bigint
  readonly sessionId: string
  readonly send: (notify: NotifyFields) => void
}

export class Bus {
  private readonly watchers = new Set<Watcher>()

  /** Registers a watcher; returns the function that removes it. */
  watch(mask: bigint, send: (notify: NotifyFields) => void): { readonly watcher: Watcher; readonly stop: () => void } {
    const watcher: Watcher = { mask, sessionId: randomBytes(8).toString("hex"), send }
    this.watchers.add(watcher)
    return { watcher, stop: () => void this.watchers.delete(watcher) }
  }

  publish(notify: NotifyFields): void {
    for (const w of this.watchers) {
      try {
        w.send(notify)
      } catch {
        this.watchers.delete(w)
      }
    }
  }

  get size() {
    return this.watchers.size
  }
}

import { Schema } from "effect"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { isMemState } from "./flags.ts"

/**
 * What survives a restart. Never the auth key: a restarted daemon re-registers with its node key
 * alone, and the control server recognises it.
 */
export const PersistedState = Schema.Struct({
  version: Schema.Literal(1),
  /** `nodekey:` + 64 hex; absent until the first login attempt, dropped on logout */
  nodeKey: Schema.optional(Schema.String),
  /** the ControlURL the node registered with */
  controlUrl: Schema.optional(Schema.String),
  loggedIn: Schema.Boolean,
  prefs: Schema.Unknown
})
export type PersistedState = typeof PersistedState.Type

export const newNodeKey = (): string => `nodekey:${randomBytes(32).toString("hex")}`

export interface StateStore {
  readonly load: () => PersistedState | undefined
  readonly save: (state: PersistedState) => void
  readonly ephemeral: boolean
}

const decode = Schema.decodeUnknownSync(PersistedState)

/** The state file (JSON, 0600, written atomically), or memory for `--state=mem:`. */
export const openStateStore = (state: string): StateStore => {
  if (isMemState(state)) {
    let saved: PersistedState | undefined
    return { ephemeral: true, load: () => saved, save: (s) => void (saved = s) }
  }
  if (state.includes(":")) throw new Error(`unsupported --state ${JSON.stringify(state)}: the stand-in takes a file path or mem:`)
  return {
    ephemeral: false,
    load: () => {
      let text: string
      try {
        text = fs.readFileSync(state, "utf8")
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined
        throw e
      }
      try {
        return decode(JSON.parse(text))
      } catch (e) {
        throw new Error(`cannot read state file ${state}: ${e instanceof Error ? e.message : String(e)}`)
      }
    },
    save: (s) => {
      fs.mkdirSync(path.dirname(state), { recursive: true, mode: 0o700 })
      const tmp = `${state}.tmp${process.pid}`
      fs.writeFileSync(tmp, `${JSON.stringify(s, null, 2)}\n`, { mode: 0o600 })
      fs.renameSync(tmp, state)
    }
  }
}

import { Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { DEFAULT_STATE_DIR, eventsDir, STATE_DIR_ENV } from "./state.ts"

/**
 * The event journal: what the plugin binaries did, one JSON line per call, for the agent's
 * metrics. `<stateDir>/events/events.jsonl` is appended to only when `<stateDir>/events/` exists,
 * that is when an agent made it, so nothing grows on a node without an agent.
 *
 * Every line is written with a single write(2) on an O_APPEND descriptor and stays under 4 KiB,
 * so lines of concurrent plugin processes never interleave. Recording is best effort: it costs
 * one open, one write and one close, and never fails or slows down the CNI call it describes.
 * An event holds no configuration values but the network name, the mode and the IPAM data dir.
 */

export const EVENTS_FILE = "events.jsonl"
/** The journal after the agent rotated it: `events.jsonl.1`. */
export const ROTATED_EVENTS_FILE = `${EVENTS_FILE}.1`
/** A line is never longer (PIPE_BUF, and well under what one write(2) lands at once). */
export const MAX_EVENT_LINE = 4000

export const EVENT_PLUGIN = /^[a-z0-9][a-z0-9_.-]{0,63}$/
export const EVENT_MODE = /^[a-z][a-z0-9-]{0,31}$/

/** The binary that answered: `containerscale`, `containerscale-ipam`, or a plugin of its own built on the CNI skel. */
export const EventPlugin = Schema.String.check(Schema.isPattern(EVENT_PLUGIN))
export type EventPlugin = typeof EventPlugin.Type

/** The mode a call ran in: `router`, `member`, `ipam`, or what a plugin of its own says (`plugin` by default). */
export const EventMode = Schema.String.check(Schema.isPattern(EVENT_MODE))
export type EventMode = typeof EventMode.Type

/** The runtime's name for the call (CNI_COMMAND: ADD, DEL, ...); `unknown` when it named none the plugin knows. */
export const EventCommand = Schema.String.check(Schema.isPattern(/^[A-Za-z]{1,16}$/))
export type EventCommand = typeof EventCommand.Type

const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

/** One line of the journal. */
export const PluginEvent = Schema.Struct({
  /** when the answer was written, epoch milliseconds */
  t: Schema.Number,
  plugin: EventPlugin,
  command: EventCommand,
  mode: EventMode,
  /** the network's name, when the configuration named one */
  network: Schema.optional(Schema.String),
  result: Schema.Literals(["ok", "error"]),
  /** the CNI error code of a failed call */
  code: Schema.optional(Schema.Int),
  /** the error's tag (e.g. InvalidNetworkConfig), or the name of its code when no tag was seen */
  error: Schema.optional(Schema.String),
  /** milliseconds from the process start to the answer written */
  ms: Schema.Number,
  /** the IPAM data directory the call used (absolute), when it used the in-process IPAM */
  dataDir: Schema.optional(Schema.String),
  /** addresses the call handed out (new ones only, not those the attachment already held) */
  allocated: Schema.optional(Count),
  /** addresses the call freed (DEL, GC, or a failed ADD undoing itself) */
  released: Schema.optional(Count)
})
export type PluginEvent = typeof PluginEvent.Type

/**
 * The node state directory of a CNI call: the network config's `stateDir`, else
 * CONTAINERSCALE_STATE_DIR, else /var/lib/containerscale.
 */
export const stateDirOf = (
  config: unknown,
  env: Readonly<Record<string, string | undefined>>
): string => {
  const own = typeof config === "object" && config !== null ? (config as { stateDir?: unknown }).stateDir : undefined
  if (typeof own === "string" && own !== "") return own
  const fromEnv = env[STATE_DIR_ENV]
  return fromEnv !== undefined && fromEnv !== "" ? fromEnv : DEFAULT_STATE_DIR
}

export const eventsFile = (stateDir: string) => path.join(eventsDir(stateDir), EVENTS_FILE)

/** The line of an event; `t` comes first, which lets a reader resynchronise after a torn line. */
export const formatEvent = (event: PluginEvent): string => {
  const e = {
    t: event.t,
    plugin: event.plugin,
    command: event.command,
    mode: event.mode,
    network: event.network,
    result: event.result,
    code: event.code,
    error: event.error,
    ms: event.ms,
    dataDir: event.dataDir,
    allocated: event.allocated,
    released: event.released
  }
  let text = JSON.stringify(e) + "\n"
  if (text.length * 3 > MAX_EVENT_LINE && Buffer.byteLength(text) > MAX_EVENT_LINE) {
    // only an absurd data dir, error or network name gets here: keep the counts, drop the names
    text = JSON.stringify({ ...e, network: undefined, error: undefined, dataDir: undefined }) + "\n"
  }
  return text
}

const APPEND = fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW

/**
 * Appends the event to `<stateDir>/events/events.jsonl` when `<stateDir>/events/` exists.
 * Never throws: returns whether the line was written.
 */
export const recordEvent = (stateDir: string, event: PluginEvent): boolean => {
  let fd = -1
  try {
    // no agent, no journal; asked first because a thrown ENOENT costs a Bun binary ~0.2 ms
    const dir = eventsDir(stateDir)
    if (!fs.existsSync(dir)) return false
    const line = formatEvent(event)
    fd = fs.openSync(path.join(dir, EVENTS_FILE), APPEND, 0o640)
    return fs.writeSync(fd, line) > 0
  } catch {
    return false
  } finally {
    if (fd >= 0) {
      try {
        fs.closeSync(fd)
      } catch {
        // nothing to do
      }
    }
  }
}

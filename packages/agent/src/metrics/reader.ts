import { eventsDir, EVENTS_FILE, PluginEvent, ROTATED_EVENTS_FILE } from "@containerscale/core"
import { Duration, Effect, Option, Schedule, Schema, type Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import type { ContainerscaleMetrics, IpamStoreRef } from "./registry.ts"

/**
 * Tails the plugins' event journal, `<stateDir>/events/events.jsonl`, into the metrics.
 *
 * - Where it got to is kept in `<stateDir>/events/offset`, per file (inode and birth time) so a
 *   restarted agent neither counts an event twice nor misses one written while it was down.
 * - When the journal has grown past `rotateBytes` and is read up to its end, the reader renames it
 *   to `events.jsonl.1` (the next plugin creates a new one). It keeps reading `events.jsonl.1` from
 *   where it was, so a line a plugin appends through a descriptor opened just before the rename is
 *   not lost; the old `events.jsonl.1` is read once more before it is replaced.
 * - Only lines ending in a newline are read. A line a crashed plugin left torn gets the next one
 *   glued to it: the reader keeps the event that starts at the last `{"t":` in it.
 * - The IPAM stores the events named are kept in the offset file too, for the pool gauges.
 */

export interface EventsReaderOptions {
  /** the node state directory; the journal is in `<stateDir>/events/` */
  readonly stateDir: string
  readonly metrics: ContainerscaleMetrics
  /** rotate the journal once it is this big and read; default 8 MiB */
  readonly rotateBytes?: number
  /** poll interval of eventsReaderScoped; default 1000 ms */
  readonly intervalMs?: number
}

export interface PollResult {
  /** events counted */
  readonly events: number
  /** lines that were not events */
  readonly invalid: number
  /** whether the journal was rotated */
  readonly rotated: boolean
}

export interface EventsReader {
  /** `<stateDir>/events` */
  readonly dir: string
  /**
   * Creates `<stateDir>/events/` (which turns the plugins' recording on) and the offset state.
   * poll() does it too.
   */
  readonly init: () => void
  /** Reads what the plugins appended since the last poll, counts it, persists the offset. */
  readonly poll: () => PollResult
}

interface FileMark {
  readonly ino: number
  readonly birth: number
  /** bytes read: complete lines only */
  readonly offset: number
}

const State = Schema.Struct({
  version: Schema.Literal(1),
  files: Schema.Array(Schema.Struct({ ino: Schema.Number, birth: Schema.Number, offset: Schema.Number })),
  stores: Schema.Array(Schema.Struct({ network: Schema.String, dataDir: Schema.String }))
})
const decodeState = Schema.decodeUnknownOption(Schema.fromJsonString(State))
const decodeEvent = Schema.decodeUnknownOption(PluginEvent)

export const OFFSET_FILE = "offset"
export const DEFAULT_ROTATE_BYTES = 8 * 1024 * 1024
const CHUNK = 1024 * 1024
const START = "{\"t\":"

const openIfExists = (file: string): number | undefined => {
  try {
    return fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined
    throw e
  }
}

export const makeEventsReader = (options: EventsReaderOptions): EventsReader => {
  const dir = eventsDir(options.stateDir)
  const journal = path.join(dir, EVENTS_FILE)
  const rotatedJournal = path.join(dir, ROTATED_EVENTS_FILE)
  const offsetFile = path.join(dir, OFFSET_FILE)
  const rotateBytes = options.rotateBytes ?? DEFAULT_ROTATE_BYTES
  const metrics = options.metrics

  let files: ReadonlyArray<FileMark> = []
  let storeCount = 0
  let loaded = false

  const load = () => {
    if (loaded) return
    let text: string | undefined
    try {
      text = fs.readFileSync(offsetFile, "utf8")
    } catch {
      text = undefined
    }
    const state = text === undefined ? Option.none() : decodeState(text)
    if (Option.isSome(state)) {
      files = state.value.files
      for (const s of state.value.stores) metrics.addStore(s)
    }
    storeCount = metrics.stores().length
    loaded = true
  }

  const persist = () => {
    const stores: ReadonlyArray<IpamStoreRef> = metrics.stores()
    const tmp = `${offsetFile}.tmp`
    fs.writeFileSync(tmp, JSON.stringify({ version: 1, files, stores }) + "\n", { mode: 0o644 })
    fs.renameSync(tmp, offsetFile)
    storeCount = stores.length
  }

  const init = () => {
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 })
    load()
  }

  /** Counts the complete lines of `buf`; returns the bytes they span. */
  const consume = (buf: Buffer, counts: { events: number; invalid: number }): number => {
    let offset = 0
    for (;;) {
      const nl = buf.indexOf(10, offset)
      if (nl === -1) return offset
      const line = buf.toString("utf8", offset, nl)
      offset = nl + 1
      if (line.trim() === "") continue
      let event = parse(line)
      if (event === undefined) {
        // a torn line with a whole one glued to it: keep the whole one
        const start = line.lastIndexOf(START)
        if (start > 0) event = parse(line.slice(start))
        counts.invalid++
        metrics.invalidEvents.inc()
      }
      if (event !== undefined) {
        metrics.observe(event)
        counts.events++
      }
    }
  }

  const parse = (line: string): PluginEvent | undefined => {
    let json: unknown
    try {
      json = JSON.parse(line)
    } catch {
      return undefined
    }
    return Option.getOrUndefined(decodeEvent(json))
  }

  /** Reads one file from its mark; returns its new mark and size. */
  const drain = (
    file: string,
    counts: { events: number; invalid: number },
    unknownFrom: "start" | "end"
  ): { readonly mark: FileMark; readonly size: number } | undefined => {
    const fd = openIfExists(file)
    if (fd === undefined) return undefined
    try {
      const st = fs.fstatSync(fd)
      const known = files.find((f) => f.ino === st.ino && f.birth === st.birthtimeMs)
      // a file we never saw: the live journal is new (read it all); a rotated one is old news
      let offset = known !== undefined && known.offset <= st.size ? known.offset : unknownFrom === "start" ? 0 : st.size
      let pending = Buffer.alloc(0)
      let at = offset
      while (at < st.size) {
        const want = Math.min(CHUNK, st.size - at)
        const chunk = Buffer.allocUnsafe(want)
        const n = fs.readSync(fd, chunk, 0, want, at)
        if (n === 0) break
        at += n
        const buf = pending.length === 0 ? chunk.subarray(0, n) : Buffer.concat([pending, chunk.subarray(0, n)])
        const used = consume(buf, counts)
        offset += used
        pending = Buffer.from(buf.subarray(used))
        if (pending.length > 64 * 1024) {
          // no newline in 64 KiB: not a journal line; skip it rather than stall forever
          offset += pending.length
          pending = Buffer.alloc(0)
          counts.invalid++
          metrics.invalidEvents.inc()
        }
      }
      return { mark: { ino: st.ino, birth: st.birthtimeMs, offset }, size: st.size }
    } finally {
      fs.closeSync(fd)
    }
  }

  const poll = (): PollResult => {
    init()
    const counts = { events: 0, invalid: 0 }
    const before = JSON.stringify(files)
    // older lines first: what is left in the rotated journal, then the live one
    const old = drain(rotatedJournal, counts, "end")
    const live = drain(journal, counts, "start")
    files = [old?.mark, live?.mark].filter((m) => m !== undefined)
    let rotated = false
    if (live !== undefined && live.mark.offset >= rotateBytes) {
      // the old rotated journal was read just now: replace it
      fs.renameSync(journal, rotatedJournal)
      files = [live.mark]
      rotated = true
    }
    if (rotated || JSON.stringify(files) !== before || metrics.stores().length !== storeCount) persist()
    return { ...counts, rotated }
  }

  return { dir, init, poll }
}

const messageOf = (e: unknown) => (e instanceof Error ? e.message : String(e))

/**
 * The reader as a scoped resource: init() (failing when the events directory cannot be made),
 * then poll() now and every `intervalMs` while the scope is open, and one last time when it
 * closes. A failed poll is logged (a warning when the previous one went well) and the next tick
 * tries again.
 */
export const eventsReaderScoped = (options: EventsReaderOptions): Effect.Effect<EventsReader, Error, Scope.Scope> =>
  Effect.gen(function*() {
    const reader = makeEventsReader(options)
    yield* Effect.try({
      try: () => reader.init(),
      catch: (e) => new Error(`cannot set up the event journal in ${reader.dir}: ${messageOf(e)}`)
    })
    let failing = false
    const tick = Effect.try({ try: () => reader.poll(), catch: messageOf }).pipe(
      Effect.tap(() => Effect.sync(() => (failing = false))),
      Effect.catch((error) => {
        const log = failing ? Effect.logDebug : Effect.logWarning
        failing = true
        return log("reading the event journal failed; trying again", { dir: reader.dir, error })
      })
    )
    yield* Effect.forkScoped(Effect.repeat(tick, Schedule.spaced(Duration.millis(options.intervalMs ?? 1000))))
    yield* Effect.addFinalizer(() => tick)
    return reader
  })

/**
 * `@containerscale/core/log`: the one logger of the long-running binaries (the agent and the
 * Docker driver). One JSON object a line: `time`, `level`, `msg`, then the fields; `Redacted`
 * values print as `<redacted>`, errors as their message. Callers pass no secrets.
 *
 * - `layer(options)`: the Effect `Logger` writing to stderr (or appended to a file) and the minimum
 *   level. `Effect.log*("msg", { field })`: the plain-object arguments (and the log annotations)
 *   become fields, the rest the message.
 * - `facade`: `{ debug, info, warn, error }(msg, fields)` over the current loggers, for code that
 *   logs outside an Effect.
 * - `memory()`: keeps the lines, for tests.
 *
 * A separate entry point, so the plugins do not load it.
 */
import { Cause, Effect, Layer, Logger, LogLevel, Predicate, Redacted, References } from "effect"
import * as fs from "node:fs"

export type Level = "debug" | "info" | "warn" | "error"
export type Fields = Readonly<Record<string, unknown>>

export interface Log {
  readonly debug: (msg: string, fields?: Fields) => void
  readonly info: (msg: string, fields?: Fields) => void
  readonly warn: (msg: string, fields?: Fields) => void
  readonly error: (msg: string, fields?: Fields) => void
}

/** A line as `memory()` keeps it: what was printed, without `time`. */
export type Line = { readonly level: Level; readonly msg: string } & Readonly<Record<string, unknown>>

const severity: Record<Level, LogLevel.Severity> = { debug: "Debug", info: "Info", warn: "Warn", error: "Error" }

const levelOf = (level: LogLevel.LogLevel): Level =>
  level === "Warn" ? "warn" : level === "Error" || level === "Fatal" ? "error" : level === "Info" ? "info" : "debug"

const isFields = (u: unknown): u is Fields => {
  if (!Predicate.isObject(u) || Array.isArray(u) || Redacted.isRedacted(u)) return false
  const proto = Object.getPrototypeOf(u)
  return proto === Object.prototype || proto === null
}

/** JSON.stringify hands a replacer what `toJSON` made of a value: look at the holder's own. */
function replacer(this: unknown, key: string, value: unknown) {
  const raw = key === "" ? value : (this as Record<string, unknown>)[key]
  if (Redacted.isRedacted(raw)) return "<redacted>"
  if (raw instanceof Error) return raw.message
  if (typeof raw === "bigint") return raw.toString()
  return value
}

const text = (u: unknown): string => {
  if (typeof u === "string") return u
  if (Redacted.isRedacted(u)) return "<redacted>"
  if (u instanceof Error) return u.message
  try {
    return JSON.stringify(u, replacer) ?? String(u)
  } catch {
    return String(u)
  }
}

/** One line: `{"time","level","msg",...fields}` and a newline. */
export const render = (time: Date, level: Level, msg: string, fields: Fields = {}): string => {
  const record = { time: time.toISOString(), level, msg, ...fields }
  try {
    return JSON.stringify(record, replacer) + "\n"
  } catch (e) {
    return JSON.stringify({ time: record.time, level, msg, logError: `fields not printable: ${(e as Error).message}` }) + "\n"
  }
}

/** The line of one Effect log call: strings make the message, plain objects and annotations the fields. */
const renderOptions = (options: Logger.Options<unknown>): string => {
  const parts = Array.isArray(options.message) ? options.message : [options.message]
  const words: Array<string> = []
  const fields: Record<string, unknown> = { ...options.fiber.getRef(References.CurrentLogAnnotations) }
  for (const part of parts) {
    if (isFields(part)) Object.assign(fields, part)
    else words.push(text(part))
  }
  if (options.cause.reasons.length > 0) fields["cause"] = Cause.pretty(options.cause)
  return render(options.date, levelOf(options.logLevel), words.join(" "), fields)
}

/** The Effect `Logger` that hands each line to `write`. */
export const jsonLogger = (write: (line: string) => void): Logger.Logger<unknown, void> =>
  Logger.make((options) => write(renderOptions(options)))

const fdWriter = (fd: number) => (line: string) => {
  try {
    fs.writeSync(fd, line)
  } catch {
    // a log line must never take the program down
  }
}

export interface LayerOptions {
  /** default info */
  readonly level?: Level | undefined
  /** append to this file (created 0600); default stderr */
  readonly file?: string | undefined
}

/** The JSON logger (replacing the default one) and the minimum level. */
export const layer = (options: LayerOptions = {}): Layer.Layer<never, Error> => {
  const logger = options.file === undefined
    ? Effect.succeed(jsonLogger(fdWriter(2)))
    : Effect.map(
      Effect.acquireRelease(
        Effect.try({
          try: () => fs.openSync(options.file!, "a", 0o600),
          catch: (e) => new Error(`cannot open the log file ${options.file}: ${(e as Error).message}`)
        }),
        (fd) => Effect.sync(() => fs.closeSync(fd))
      ),
      (fd) => jsonLogger(fdWriter(fd))
    )
  return Layer.merge(Logger.layer([logger]), Layer.succeed(References.MinimumLogLevel, severity[options.level ?? "info"]))
}

/** The lines logged, for tests: every level is kept. */
export interface MemoryLog {
  /** the lines as printed, parsed, without `time` */
  readonly lines: Array<Line>
  /** the lines as printed */
  readonly output: Array<string>
  readonly layer: Layer.Layer<never>
}

export const memory = (): MemoryLog => {
  const lines: Array<Line> = []
  const output: Array<string> = []
  const logger = jsonLogger((line) => {
    output.push(line)
    const { time: _, ...rest } = JSON.parse(line) as Line & { time: string }
    lines.push(rest)
  })
  return { lines, output, layer: Layer.merge(Logger.layer([logger]), Layer.succeed(References.MinimumLogLevel, "All")) }
}

/**
 * `{ debug, info, warn, error }(msg, fields)` writing through the loggers and minimum level of the
 * fiber that made it, for code that logs outside an Effect.
 */
export const facade: Effect.Effect<Log> = Effect.withFiber((fiber) => {
  const loggers = fiber.getRef(Logger.CurrentLoggers)
  const minimum = fiber.getRef(References.MinimumLogLevel)
  const emit = (level: Level) => {
    const logLevel = severity[level]
    return LogLevel.isGreaterThan(minimum, logLevel) ? () => {} : (msg: string, fields?: Fields) => {
      const message = fields === undefined ? [msg] : [msg, fields]
      const date = new Date()
      for (const logger of loggers) logger.log({ message, logLevel, cause: Cause.empty, fiber, date })
    }
  }
  return Effect.succeed({ debug: emit("debug"), info: emit("info"), warn: emit("warn"), error: emit("error") })
})

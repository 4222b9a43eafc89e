import * as fs from "node:fs"

export type Level = "debug" | "info" | "warn" | "error"
const rank: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 }

export interface Logger {
  readonly debug: (msg: string, fields?: Record<string, unknown>) => void
  readonly info: (msg: string, fields?: Record<string, unknown>) => void
  readonly warn: (msg: string, fields?: Record<string, unknown>) => void
  readonly error: (msg: string, fields?: Record<string, unknown>) => void
}

/**
 * Structured logs: one JSON object a line (`time`, `level`, `msg`, then the fields), to stderr or
 * appended to a file. Callers pass no secrets; values that are `Redacted` print as `<redacted>`.
 */
export const makeLogger = (options: { readonly level?: Level | undefined; readonly file?: string | undefined } = {}): Logger => {
  const min = rank[options.level ?? "info"]
  const fd = options.file === undefined ? 2 : fs.openSync(options.file, "a", 0o600)
  const write = (level: Level) => (msg: string, fields: Record<string, unknown> = {}) => {
    if (rank[level] < min) return
    fs.writeSync(fd, JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }) + "\n")
  }
  return { debug: write("debug"), info: write("info"), warn: write("warn"), error: write("error") }
}

/** A logger that keeps the lines, for tests. */
export const memoryLogger = (): Logger & { readonly lines: Array<{ level: Level; msg: string } & Record<string, unknown>> } => {
  const lines: Array<{ level: Level; msg: string } & Record<string, unknown>> = []
  const push = (level: Level) => (msg: string, fields: Record<string, unknown> = {}) => void lines.push({ level, msg, ...fields })
  return { lines, debug: push("debug"), info: push("info"), warn: push("warn"), error: push("error") }
}

/** A small line logger to stderr: `time level message key=value ...`. Never give it secrets. */
export interface Logger {
  readonly info: (message: string, fields?: Record<string, unknown>) => void
  readonly warn: (message: string, fields?: Record<string, unknown>) => void
  readonly error: (message: string, fields?: Record<string, unknown>) => void
}

const render = (level: string, message: string, fields: Record<string, unknown> | undefined) =>
  `${new Date().toISOString()} ${level} ${message}` +
  Object.entries(fields ?? {}).map(([k, v]) => ` ${k}=${typeof v === "string" ? JSON.stringify(v) : String(v)}`).join("") + "\n"

export const stderrLogger = (write: (line: string) => void = (l) => process.stderr.write(l)): Logger => ({
  info: (m, f) => write(render("info", m, f)),
  warn: (m, f) => write(render("warn", m, f)),
  error: (m, f) => write(render("error", m, f))
})

/** Keeps the lines, for tests. */
export const memoryLogger = (): Logger & { readonly lines: Array<string> } => {
  const lines: Array<string> = []
  return { lines, ...stderrLogger((l) => lines.push(l)) }
}

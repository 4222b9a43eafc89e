import * as fs from "node:fs"
import type { DaemonOptions, Finished, RunOptions } from "./run.ts"

declare const Bun: {
  spawn(options: {
    cmd: Array<string>
    env?: Record<string, string | undefined>
    stdin: Blob | "ignore"
    stdout: "pipe" | number
    stderr: "pipe" | "inherit" | number
  }): {
    readonly pid: number
    unref(): void
    readonly stdout: ReadableStream<Uint8Array>
    readonly stderr: ReadableStream<Uint8Array> | number | undefined
    readonly exited: Promise<number>
    readonly signalCode: string | null
  }
}

const text = (stream: unknown) => (stream instanceof ReadableStream ? new Response(stream).text() : Promise.resolve(""))

/** Runs `file` to its end. Bun's own spawn: loading node:child_process costs a compiled plugin start-up time. */
export const runProcess = async (file: string, args: ReadonlyArray<string>, options: RunOptions = {}): Promise<Finished> => {
  let child
  try {
    child = Bun.spawn({
      cmd: [file, ...args],
      env: { ...(options.env ?? process.env) },
      stdin: new Blob([options.stdin ?? ""]),
      stdout: "pipe",
      stderr: options.inheritStderr === true ? "inherit" : "pipe"
    })
  } catch (e) {
    return { _tag: "NotStarted", reason: (e as Error).message }
  }
  const [stdout, stderr, code] = await Promise.all([text(child.stdout), text(child.stderr), child.exited])
  return { _tag: "Exited", code: child.signalCode === null ? code : 128, stdout, stderr }
}

/**
 * Starts `file` in a session of its own (through setsid(1), which execs in place, so the pid is
 * the daemon's) that outlives the caller, output appended to the log; resolves with its pid.
 */
export const spawnDaemon = async (file: string, args: ReadonlyArray<string>, options: DaemonOptions): Promise<number> => {
  const log = fs.openSync(options.logFile, "a", 0o600)
  try {
    const child = Bun.spawn({
      cmd: ["setsid", file, ...args],
      env: { ...(options.env ?? process.env) },
      stdin: "ignore",
      stdout: log,
      stderr: log
    })
    child.unref()
    return child.pid
  } finally {
    fs.closeSync(log)
  }
}

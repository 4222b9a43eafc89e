import { spawn } from "node:child_process"
import * as fs from "node:fs"
import type { DaemonOptions, Finished, RunOptions } from "./run.ts"

/** Runs `file` to its end. */
export const runProcess = (file: string, args: ReadonlyArray<string>, options: RunOptions = {}): Promise<Finished> =>
  new Promise((resolve) => {
    const child = spawn(file, args, {
      env: options.env ?? process.env,
      stdio: ["pipe", "pipe", options.inheritStderr === true ? "inherit" : "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d))
    child.stderr?.setEncoding("utf8").on("data", (d: string) => (stderr += d))
    child.on("error", (e) => resolve({ _tag: "NotStarted", reason: e.message }))
    child.on("close", (code, signal) => resolve({ _tag: "Exited", code: code ?? (signal === null ? 1 : 128), stdout, stderr }))
    child.stdin!.on("error", () => {}) // the program may exit without reading its input: its exit code tells
    child.stdin!.end(options.stdin ?? "")
  })

/**
 * Starts `file` in a session of its own that outlives the caller (a plugin process exits right
 * after answering), output appended to the log; resolves with its pid once it runs.
 */
export const spawnDaemon = (file: string, args: ReadonlyArray<string>, options: DaemonOptions): Promise<number> =>
  new Promise((resolve, reject) => {
    const log = fs.openSync(options.logFile, "a", 0o600)
    const child = spawn(file, args, { detached: true, stdio: ["ignore", log, log], env: options.env ?? process.env })
    fs.closeSync(log)
    child.once("error", reject)
    child.once("spawn", () => {
      child.unref()
      resolve(child.pid!)
    })
  })

import { spawn } from "node:child_process"
import type { Finished, RunOptions } from "./run.ts"

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

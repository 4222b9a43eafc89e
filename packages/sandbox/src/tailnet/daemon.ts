import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import { socketAnswers } from "@containerscale/testing"

/** A daemon the real tailnet fixture started, its output appended to `logFile`. */
export interface Daemon {
  readonly child: ChildProcess
  readonly exited: Promise<void>
  readonly logFile: string
}

export const startDaemon = (command: ReadonlyArray<string>, logFile: string, env: NodeJS.ProcessEnv): Daemon => {
  const log = fs.openSync(logFile, "a", 0o600)
  const child = spawn(command[0]!, command.slice(1), { stdio: ["ignore", log, log], env })
  fs.closeSync(log)
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve()
    child.once("exit", () => resolve())
    child.once("error", () => resolve())
  })
  return { child, exited, logFile }
}

export const stopDaemon = async (d: Daemon, timeoutMs = 10_000) => {
  if (d.child.exitCode !== null || d.child.signalCode !== null) return
  d.child.kill("SIGTERM")
  const timer = setTimeout(() => d.child.kill("SIGKILL"), timeoutMs)
  await d.exited
  clearTimeout(timer)
}

export const readLog = (file: string) => {
  try {
    return fs.readFileSync(file, "utf8")
  } catch {
    return ""
  }
}

/** `true` once a daemon that still runs answers on its socket, else undefined (for `waitUntil`). */
export const answering = async (daemon: Daemon, socket: string): Promise<true | undefined> =>
  daemon.child.exitCode === null && (await socketAnswers(socket)) ? true : undefined

import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import { runCommand } from "./command.ts"
import { deleteNetns, listLinks, listNetns } from "./netns.ts"

export interface Leftovers {
  readonly netns: ReadonlyArray<string>
  /** links in the current namespace */
  readonly links: ReadonlyArray<string>
}

/** Namespaces and links whose names start with `prefix`. */
export const leftovers = (prefix: string): Leftovers => ({ netns: listNetns(prefix), links: listLinks(undefined, prefix) })

/** Deletes every namespace and link whose name starts with `prefix`; tolerates ones already gone. */
export const removeLeftovers = (prefix: string): void => {
  const { links, netns } = leftovers(prefix)
  for (const link of links) {
    try {
      runCommand("ip", ["link", "delete", link])
    } catch {
      // already gone with its peer
    }
  }
  for (const name of netns) deleteNetns(name)
}

/** The pids of the processes whose command line contains `text` (e.g. a state dir they were given). */
export const processesWith = (text: string): Array<number> =>
  fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p)).map(Number).filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(text)
    } catch {
      return false
    }
  })

/** Whether a process with this exact name (`/proc/PID/comm`) runs. */
export const processRunning = (name: string): boolean =>
  fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p)).some((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim() === name
    } catch {
      return false
    }
  })

/** Runs every step of a clean-up, also after one fails; then throws all their errors together. */
export const cleanUpAll = async (steps: ReadonlyArray<() => unknown>): Promise<void> => {
  const errors: Array<unknown> = []
  for (const step of steps) {
    try {
      await step()
    } catch (e) {
      errors.push(e)
    }
  }
  if (errors.length > 0) throw new AggregateError(errors, errors.map(String).join("; "))
}

/**
 * Which of `paths` the process can create a file in, as its own mount namespace and root show them
 * (each probe file is removed at once).
 */
export const writableFor = (pid: number, paths: ReadonlyArray<string>): Array<string> =>
  execFileSync("nsenter", [`--target=${pid}`, "--mount", "--root", "--", "sh", "-c",
    'for p in "$@"; do f="$p/.containerscale-probe-$$"; if touch "$f" 2>/dev/null; then rm -f "$f"; echo "$p"; fi; done', "sh", ...paths], {
    encoding: "utf8"
  }).split("\n").filter((line) => line !== "")

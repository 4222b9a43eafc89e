import * as fs from "node:fs"
import * as path from "node:path"
import { runCommand } from "./command.ts"
import { deleteNetns, listLinks, listNetns } from "./netns.ts"

/** Where libcni (podman, ctr) caches ADD results on the host; it cannot be moved. */
export const libcniResultsDir = "/var/lib/cni/results"

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

/** libcni's cached results for a network: files `<network>-<container id>-<ifname>`. */
export const libcniCacheFiles = (network: string): Array<string> => {
  if (!fs.existsSync(libcniResultsDir)) return []
  return fs.readdirSync(libcniResultsDir).filter((f) => f.startsWith(`${network}-`)).map((f) => path.join(libcniResultsDir, f))
}

export const removeLibcniCache = (network: string): void => {
  for (const f of libcniCacheFiles(network)) fs.rmSync(f, { force: true })
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

/**
 * Directories every containerd makes wherever its state and root are (shim sockets and fifos under
 * /run/containerd, the "opt" plugin's /opt/containerd), deepest first.
 */
const containerdHostDirs = [
  "/run/containerd/s",
  "/run/containerd/fifo",
  "/run/containerd/runc",
  "/run/containerd",
  "/opt/containerd/bin",
  "/opt/containerd/lib",
  "/opt/containerd"
]

/**
 * Removes those directories when they are empty and no containerd runs any more: sandboxes of
 * several test files start containerds at once, so the last one to go cleans up after all of them.
 * A machine's own containerd keeps them in use (and files in them), which stops this.
 */
export const removeContainerdLeftovers = (): void => {
  if (processRunning("containerd")) return
  for (const dir of containerdHostDirs) {
    try {
      if (fs.readdirSync(dir).length === 0) fs.rmdirSync(dir)
    } catch {
      // missing, or not empty: not ours to remove
    }
  }
}

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

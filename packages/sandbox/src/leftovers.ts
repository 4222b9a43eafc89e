import * as fs from "node:fs"
import * as path from "node:path"
import { processRunning } from "@containerscale/testing"

/** Where libcni (podman, ctr) caches ADD results on the host; it cannot be moved. */
export const libcniResultsDir = "/var/lib/cni/results"

/** libcni's cached results for a network: files `<network>-<container id>-<ifname>`. */
export const libcniCacheFiles = (network: string): Array<string> => {
  if (!fs.existsSync(libcniResultsDir)) return []
  return fs.readdirSync(libcniResultsDir).filter((f) => f.startsWith(`${network}-`)).map((f) => path.join(libcniResultsDir, f))
}

export const removeLibcniCache = (network: string): void => {
  for (const f of libcniCacheFiles(network)) fs.rmSync(f, { force: true })
}

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

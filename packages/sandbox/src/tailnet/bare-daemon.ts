import * as fs from "node:fs"
import * as path from "node:path"
import { netnsPath, waitUntil } from "@containerscale/testing"
import { answering, readLog, startDaemon, stopDaemon } from "./daemon.ts"
import type { RealTailnet, TailnetHost } from "./fixture.ts"

/**
 * A real tailscaled on a host of a real tailnet that has not logged in: what a container's member
 * daemon is before containerscale talks to its LocalAPI (`startNode` logs in with the CLI at once).
 * It runs in a UTS namespace of its own with `hostname` as the machine name, so what it reports
 * before login does not depend on this machine.
 */

export interface BareTailscaledOptions {
  /** the machine's hostname inside the daemon's UTS namespace (default: the name) */
  readonly hostname?: string
  /** userspace networking instead of a TUN device */
  readonly userspace?: boolean
  /** an existing host; default a new one named after the daemon */
  readonly host?: TailnetHost
}

export interface BareTailscaled {
  readonly name: string
  readonly host: TailnetHost
  readonly dir: string
  readonly socket: string
  readonly pid: number
  readonly log: () => string
  /** SIGTERM, SIGKILL after 10 s; resolves once the process is gone */
  readonly stop: () => Promise<void>
}

export const startBareTailscaled = async (tailnet: RealTailnet, name: string, options: BareTailscaledOptions = {}): Promise<BareTailscaled> => {
  const host = options.host ?? tailnet.addHost(name)
  const dir = path.join(tailnet.dir, "bare", name)
  fs.mkdirSync(path.join(dir, "logs"), { recursive: true, mode: 0o700 })
  const socket = path.join(dir, "tailscaled.sock")
  const logFile = path.join(dir, "tailscaled.log")
  const daemon = startDaemon([
    "nsenter", `--net=${netnsPath(host.netns)}`, "--", "unshare", "--uts", "--",
    "sh", "-c", 'hostname "$0" && exec "$@"', options.hostname ?? name,
    tailnet.runtime.tailscaled, `--statedir=${dir}`, `--socket=${socket}`,
    `--tun=${options.userspace === true ? "userspace-networking" : "tailscale0"}`, "--no-logs-no-support"
  ], logFile, tailnet.tailscaledEnv(dir))
  const stop = () => stopDaemon(daemon)
  try {
    await waitUntil(`tailscaled ${name} answering on ${socket}`, () => answering(daemon, socket), 30_000, () => readLog(logFile), 50)
  } catch (e) {
    await stop()
    throw e
  }
  return { name, host, dir, socket, pid: daemon.child.pid!, log: () => readLog(logFile), stop }
}

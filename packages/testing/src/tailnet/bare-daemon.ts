import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { netnsPath } from "../netns.ts"
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

const socketAnswers = (socket: string) =>
  new Promise<boolean>((resolve) => {
    const c = net.createConnection(socket)
    c.once("connect", () => {
      c.destroy()
      resolve(true)
    })
    c.once("error", () => resolve(false))
  })

const readLog = (file: string) => {
  try {
    return fs.readFileSync(file, "utf8")
  } catch {
    return ""
  }
}

const stopChild = async (child: ChildProcess, exited: Promise<void>) => {
  if (child.exitCode !== null || child.signalCode !== null) return
  child.kill("SIGTERM")
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000)
  await exited
  clearTimeout(timer)
}

export const startBareTailscaled = async (tailnet: RealTailnet, name: string, options: BareTailscaledOptions = {}): Promise<BareTailscaled> => {
  const host = options.host ?? tailnet.addHost(name)
  const dir = path.join(tailnet.dir, "bare", name)
  fs.mkdirSync(path.join(dir, "logs"), { recursive: true, mode: 0o700 })
  const socket = path.join(dir, "tailscaled.sock")
  const logFile = path.join(dir, "tailscaled.log")
  const log = fs.openSync(logFile, "a", 0o600)
  const child = spawn("nsenter", [
    `--net=${netnsPath(host.netns)}`, "--", "unshare", "--uts", "--",
    "sh", "-c", 'hostname "$0" && exec "$@"', options.hostname ?? name,
    tailnet.runtime.tailscaled, `--statedir=${dir}`, `--socket=${socket}`,
    `--tun=${options.userspace === true ? "userspace-networking" : "tailscale0"}`, "--no-logs-no-support"
  ], { stdio: ["ignore", log, log], env: tailnet.tailscaledEnv(dir) })
  fs.closeSync(log)
  const exited = new Promise<void>((resolve) => {
    child.once("exit", () => resolve())
    child.once("error", () => resolve())
  })
  const deadline = Date.now() + 30_000
  while (!(await socketAnswers(socket))) {
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      await stopChild(child, exited)
      throw new Error(`tailscaled ${name} did not answer on ${socket}:\n${readLog(logFile)}`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  return { name, host, dir, socket, pid: child.pid!, log: () => readLog(logFile), stop: () => stopChild(child, exited) }
}

import { type Duration, Effect, type Redacted } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { spawnDaemon } from "#run"
import { MemberFailure } from "../errors.ts"
import { daemonsOf, fail, folderFix, folderProblem, pathsIn } from "./memberFolder.ts"
import { daemonEnv, upDaemon } from "./tailscaled.ts"

/**
 * The cluster network's own tailscaled (the agent's daemon mode), for a node that has none: in the
 * node's network namespace, with its own folder (state, socket, log), TUN device and key. It is
 * found again by the socket on its command line, so a restarted agent adopts the running one, and
 * brought up through the LocalAPI with the key in the `start` body.
 */

export interface NodeDaemonOptions {
  /** its folder: state, socket, pid and log (0700) */
  readonly dir: string
  readonly tailscaled: string
  /** its TUN device */
  readonly tun: string
  /** its WireGuard UDP port (0: any) */
  readonly port: number
  /** the node's namespace, when the caller does not run in it */
  readonly netns?: string | undefined
  readonly hostname: string
  readonly loginServer?: string | undefined
  /** needed only until the node has logged in once: its state keeps it after */
  readonly authKey?: Redacted.Redacted<string> | undefined
  /** where the key comes from, for the messages that ask for a new one */
  readonly keySource: string
  readonly timeout: Duration.Input
}

/** The node daemon's socket under its folder. */
export const nodeDaemonSocket = (dir: string) => pathsIn(dir).socket

/**
 * Starts the node's tailscaled unless it runs, and brings it to Running. Answers its pid and
 * whether this call started it.
 */
export const ensureNodeDaemon = Effect.fnUntraced(function*(o: NodeDaemonOptions) {
  const paths = pathsIn(o.dir)
  const problem = folderProblem(o.dir)
  if (problem !== undefined) return yield* fail(`${problem}: ${folderFix}`)
  const [running] = daemonsOf(paths)
  const pid = running ?? (yield* Effect.tryPromise({
    try: async () => {
      fs.mkdirSync(path.join(o.dir, "logs"), { recursive: true, mode: 0o700 })
      fs.rmSync(paths.socket, { force: true })
      const args = [
        `--state=${paths.state}`,
        `--statedir=${o.dir}`,
        `--socket=${paths.socket}`,
        `--tun=${o.tun}`,
        `--port=${o.port}`,
        "--no-logs-no-support"
      ]
      const started = o.netns === undefined
        ? await spawnDaemon(o.tailscaled, args, { logFile: paths.log, env: daemonEnv(o.dir) })
        : await spawnDaemon("nsenter", [`--net=${o.netns}`, "--", o.tailscaled, ...args], { logFile: paths.log, env: daemonEnv(o.dir) })
      fs.writeFileSync(paths.pid, `${started}\n`, { mode: 0o600 })
      return started
    },
    catch: (e) => new MemberFailure({ message: `cannot start the node's tailscaled ${o.tailscaled}: ${(e as Error).message}` })
  }))
  yield* upDaemon(paths, pid, {
    prefs: { hostname: o.hostname, loginServer: o.loginServer, acceptRoutes: true },
    authKey: o.authKey,
    missingKeyFix: `the node's tailscaled has not logged in yet: set ${o.keySource}`,
    keySource: o.keySource,
    timeout: o.timeout
  })
  return { pid, started: running === undefined }
})

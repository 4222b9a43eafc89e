import * as path from "node:path"

/**
 * The node's state directory: one per node, shared by the plugins and the agent. Overridden by
 * the network config's `stateDir` (plugins) and `--state-dir` / CONTAINERSCALE_STATE_DIR (agent).
 *
 * - `member/<identity>/`: one folder per member-mode container (tailscaled state, socket, pid, log)
 * - `events/`: what the plugin binaries did, for the agent's metrics (written only when it exists)
 */
export const DEFAULT_STATE_DIR = "/var/lib/containerscale"

export const STATE_DIR_ENV = "CONTAINERSCALE_STATE_DIR"

export const memberRoot = (stateDir: string) => path.join(stateDir, "member")

export const eventsDir = (stateDir: string) => path.join(stateDir, "events")

/** Where the plugins and drivers take an auth key from when their config names none: a value, or a file. */
export const AUTH_KEY_ENV = "CONTAINERSCALE_AUTH_KEY"
export const AUTH_KEY_FILE_ENV = "CONTAINERSCALE_AUTH_KEY_FILE"

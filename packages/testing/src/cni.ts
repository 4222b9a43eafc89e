import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"

export type CniCommand = "ADD" | "DEL" | "CHECK" | "GC" | "STATUS" | "VERSION"

export interface PluginInvocation {
  readonly command: CniCommand
  readonly containerId?: string
  /** the CNI_NETNS value, e.g. netnsPath(name) */
  readonly netns?: string
  readonly ifname?: string
  /** CNI_ARGS, as the raw "K=V;K=V" text or as pairs */
  readonly args?: string | Readonly<Record<string, string>>
  /** CNI_PATH: where the plugin finds its delegates */
  readonly path?: string
  /** run the plugin inside this named namespace (`ip netns exec NAME`), so host-side links stay there */
  readonly runIn?: string
  readonly env?: Readonly<Record<string, string>>
  readonly timeoutMs?: number
}

export interface PluginOutcome {
  readonly exitCode: number
  readonly stdout: string
  readonly stderr: string
  /** stdout parsed as JSON; undefined when stdout is empty or not JSON */
  readonly json: unknown
}

const cniArgs = (args: PluginInvocation["args"]): string =>
  args === undefined ? "" : typeof args === "string" ? args : Object.entries(args).map(([k, v]) => `${k}=${v}`).join(";")

const parseJson = (text: string): unknown => {
  if (text.trim() === "") return undefined
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

/**
 * Runs one CNI plugin binary the way libcni does: all six CNI_* variables set (empty when not
 * given), the configuration on stdin, the answer read from stdout.
 */
export const execPlugin = (binary: string, invocation: PluginInvocation, config: object | string): Promise<PluginOutcome> => {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...invocation.env,
    CNI_COMMAND: invocation.command,
    CNI_CONTAINERID: invocation.containerId ?? "",
    CNI_NETNS: invocation.netns ?? "",
    CNI_IFNAME: invocation.ifname ?? "",
    CNI_ARGS: cniArgs(invocation.args),
    CNI_PATH: invocation.path ?? ""
  }
  const [file, argv] = invocation.runIn === undefined
    ? [binary, []]
    : ["/usr/sbin/ip", ["netns", "exec", invocation.runIn, binary]]
  const input = typeof config === "string" ? config : JSON.stringify(config)
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, { env, stdio: ["pipe", "pipe", "pipe"], timeout: invocation.timeoutMs ?? 60_000 })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d))
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d))
    child.on("error", reject)
    child.on("close", (code, signal) => {
      resolve({ exitCode: code ?? (signal === null ? 1 : 128), stdout, stderr, json: parseJson(stdout) })
    })
    child.stdin.on("error", () => {}) // a plugin may exit without reading stdin
    child.stdin.end(input)
  })
}

/** Finds a plugin binary by its `type` along a CNI_PATH-style list. */
export const findPlugin = (type: string, cniPath: string): string => {
  for (const dir of cniPath.split(":").filter((d) => d !== "")) {
    const candidate = path.join(dir, type)
    if (fs.existsSync(candidate)) return candidate
  }
  throw new Error(`CNI plugin "${type}" not found in ${cniPath}`)
}

export interface Conflist {
  readonly cniVersion: string
  readonly name: string
  readonly plugins: ReadonlyArray<{ readonly type: string; readonly capabilities?: Readonly<Record<string, boolean>> } & Record<string, unknown>>
  readonly [key: string]: unknown
}

export interface ConflistOptions extends Omit<PluginInvocation, "command" | "path"> {
  /** CNI_PATH, also used to find each plugin */
  readonly path: string
  /** the final ADD result that DEL and CHECK hand to every plugin; read from `cacheDir` when absent */
  readonly prevResult?: unknown
  /** like libcni's /var/lib/cni/results: ADD stores its result here, DEL removes it */
  readonly cacheDir?: string
  /** runtime values for declared capabilities, e.g. { ips: ["10.0.0.5/24"] } */
  readonly capabilityArgs?: Readonly<Record<string, unknown>>
}

export interface PluginCall {
  readonly type: string
  readonly config: Record<string, unknown>
  readonly outcome: PluginOutcome
}

export interface ConflistOutcome {
  /** true when every plugin that ran exited 0 */
  readonly ok: boolean
  /** ADD: the last plugin's result */
  readonly result: unknown
  /** the error JSON of the plugin that failed */
  readonly error: unknown
  readonly calls: ReadonlyArray<PluginCall>
}

const cacheFile = (dir: string, list: Conflist, o: ConflistOptions) =>
  path.join(dir, `${list.name}-${o.containerId ?? ""}-${o.ifname ?? ""}`)

/**
 * A mini libcni for ADD, DEL and CHECK over a conflist: ADD runs the plugins in order, each given
 * the previous plugin's result; DEL runs them in reverse and CHECK in order, each given the final
 * ADD result. `name` and `cniVersion` (and runtimeConfig for declared capabilities) are injected
 * into every plugin's configuration. It stops at the first plugin that fails.
 */
export const runConflist = async (
  list: Conflist,
  command: "ADD" | "DEL" | "CHECK",
  options: ConflistOptions
): Promise<ConflistOutcome> => {
  const cached = options.cacheDir === undefined ? undefined : cacheFile(options.cacheDir, list, options)
  let prevResult = options.prevResult
  if (command !== "ADD" && prevResult === undefined && cached !== undefined && fs.existsSync(cached)) {
    prevResult = JSON.parse(fs.readFileSync(cached, "utf8"))
  }
  const plugins = command === "DEL" ? [...list.plugins].reverse() : list.plugins
  const calls: Array<PluginCall> = []
  let result: unknown
  for (const plugin of plugins) {
    const config: Record<string, unknown> = { ...plugin, name: list.name, cniVersion: list.cniVersion }
    const runtimeConfig = Object.fromEntries(
      Object.entries(plugin.capabilities ?? {})
        .filter(([cap, on]) => on && options.capabilityArgs?.[cap] !== undefined)
        .map(([cap]) => [cap, options.capabilityArgs![cap]])
    )
    if (Object.keys(runtimeConfig).length > 0) config.runtimeConfig = runtimeConfig
    const prev = command === "ADD" ? result : prevResult
    if (prev !== undefined) config.prevResult = prev
    const outcome = await execPlugin(findPlugin(plugin.type, options.path), { ...options, command }, config)
    calls.push({ type: plugin.type, config, outcome })
    if (outcome.exitCode !== 0) return { ok: false, result: undefined, error: outcome.json ?? outcome.stderr, calls }
    if (command === "ADD") result = outcome.json
  }
  if (cached !== undefined) {
    if (command === "ADD") {
      fs.mkdirSync(path.dirname(cached), { recursive: true })
      fs.writeFileSync(cached, JSON.stringify(result))
    } else if (command === "DEL") {
      fs.rmSync(cached, { force: true })
    }
  }
  return { ok: true, result, error: undefined, calls }
}

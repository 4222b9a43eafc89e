import { type GcNetwork } from "@containerscale/core/gc"
import { cniModeOf, DEFAULT_STATE_DIR, defaultIpamOptions, type IpamSection, type Pool, resolvePool } from "@containerscale/core"
import { Predicate, Result } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"

/**
 * The CNI configuration directory as containerscalectl sees it: the network files libcni reads
 * (`*.conf`, `*.conflist`, `*.json`), which of them are ours (name a containerscale plugin or
 * containerscale-ipam), and which we wrote (the top-level marker `"containerscale": {"managed": true}`).
 */

export const PLUGIN_BINARIES = ["containerscale", "containerscale-ipam"] as const

/** The top-level key `install` writes into a conflist; libcni ignores unknown top-level keys. */
export const MARKER_KEY = "containerscale"

export const DEFAULT_CNI_CONF_DIR = "/etc/cni/net.d"
export const DEFAULT_CNI_BIN_DIR = "/opt/cni/bin"

export type PluginConf = Record<string, unknown> & { readonly type: string }

export interface NetworkFile {
  readonly file: string
  /** why the file could not be read as a network; the rest is empty then */
  readonly error?: string | undefined
  readonly name: string
  readonly cniVersion: string
  readonly plugins: ReadonlyArray<PluginConf>
  readonly managed: boolean
  readonly raw: unknown
}

export type NetworkMode = "router" | "member" | "ipam"

export interface OurNetwork extends NetworkFile {
  /** router: our plugin in router mode; member: our plugin in member mode; ipam: only our IPAM */
  readonly mode: NetworkMode
  /** the plugin whose `ipam` section is containerscale-ipam, if any */
  readonly ipam: { readonly plugin: string; readonly section: Record<string, unknown> } | undefined
  /** our `containerscale` plugin's config, if any */
  readonly plugin: PluginConf | undefined
}

const CONF_EXTENSIONS = [".conf", ".conflist", ".json"]

const isRecord = (u: unknown): u is Record<string, unknown> => Predicate.isObject(u) && !Array.isArray(u)

/** Reads one network file; a single-plugin `.conf` becomes a one-plugin list. */
export const readNetworkFile = (file: string): NetworkFile => {
  const empty = { file, name: "", cniVersion: "", plugins: [], managed: false, raw: undefined }
  let raw: unknown
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8"))
  } catch (e) {
    return { ...empty, error: e instanceof SyntaxError ? `not JSON: ${e.message}` : `cannot read: ${(e as Error).message}` }
  }
  if (!isRecord(raw)) return { ...empty, raw, error: "not a JSON object" }
  const name = typeof raw["name"] === "string" ? raw["name"] : ""
  const cniVersion = typeof raw["cniVersion"] === "string" ? raw["cniVersion"] : ""
  const marker = raw[MARKER_KEY]
  const managed = isRecord(marker) && marker["managed"] === true
  const list = Array.isArray(raw["plugins"]) ? raw["plugins"] : typeof raw["type"] === "string" ? [raw] : undefined
  const base = { file, name, cniVersion, managed, raw }
  if (list === undefined) return { ...base, plugins: [], error: `has neither "plugins" nor "type"` }
  const plugins = list.filter((p): p is PluginConf => isRecord(p) && typeof p["type"] === "string")
  if (plugins.length !== list.length) return { ...base, plugins, error: `every plugin needs a "type"` }
  if (name === "") return { ...base, plugins, error: `has no "name"` }
  return { ...base, plugins }
}

/** The network files of `dir`, sorted as libcni sorts them; none when the directory is missing. */
export const readConfDir = (dir: string): ReadonlyArray<NetworkFile> => {
  let names: Array<string>
  try {
    names = fs.readdirSync(dir)
  } catch {
    return []
  }
  return names
    .filter((n) => CONF_EXTENSIONS.includes(path.extname(n)) && !n.startsWith("."))
    .sort()
    .map((n) => readNetworkFile(path.join(dir, n)))
}

const ipamOf = (p: PluginConf) => (isRecord(p["ipam"]) ? p["ipam"] : undefined)

/** Whether a file mentions one of our plugins (also when it failed to parse: by its text). */
export const mentionsUs = (n: NetworkFile): boolean => {
  if (n.error !== undefined && n.plugins.length === 0) {
    try {
      return /"containerscale(-ipam)?"/.test(fs.readFileSync(n.file, "utf8")) || n.managed
    } catch {
      return false
    }
  }
  return n.managed || n.plugins.some((p) => p.type === "containerscale" || ipamOf(p)?.["type"] === "containerscale-ipam")
}

/** Our plugin's mode, as the plugin reads its config. */
export const pluginMode = (p: PluginConf): "router" | "member" => (cniModeOf(p) === "member" ? "member" : "router")

export const ourNetwork = (n: NetworkFile): OurNetwork => {
  const plugin = n.plugins.find((p) => p.type === "containerscale")
  const withIpam = n.plugins.find((p) => ipamOf(p)?.["type"] === "containerscale-ipam")
  return {
    ...n,
    plugin,
    mode: plugin === undefined ? "ipam" : pluginMode(plugin),
    ipam: withIpam === undefined ? undefined : { plugin: withIpam.type, section: ipamOf(withIpam)! }
  }
}

/** The files in `dir` that name our plugins, parsed. */
export const ourNetworks = (dir: string): ReadonlyArray<OurNetwork> =>
  readConfDir(dir).filter((n) => n.error === undefined && mentionsUs(n)).map(ourNetwork)

/** The pool of a containerscale-ipam section, or why there is none. */
export const poolOfSection = (section: Record<string, unknown>): Result.Result<Pool, string> => {
  const r = resolvePool(section as IpamSection)
  return Result.isSuccess(r) ? Result.succeed(r.success) : Result.fail(r.failure.message)
}

export const ipamDataDir = (section: Record<string, unknown>): string =>
  typeof section["dataDir"] === "string" ? section["dataDir"] : defaultIpamOptions.dataDir

/** The router-mode networks gcNode collects addresses of: our plugin in router mode with our IPAM. */
export const gcNetworks = (networks: ReadonlyArray<OurNetwork>): { networks: Array<GcNetwork>; errors: Array<string> } => {
  const out: Array<GcNetwork> = []
  const errors: Array<string> = []
  for (const n of networks) {
    if (n.mode !== "router" || n.ipam === undefined || n.ipam.plugin !== "containerscale") continue
    const pool = poolOfSection(n.ipam.section)
    if (Result.isFailure(pool)) errors.push(`${n.file}: ${pool.failure}`)
    else out.push({ name: n.name, dataDir: ipamDataDir(n.ipam.section), pool: pool.success })
  }
  return { networks: out, errors }
}

/** The state directories the member-mode networks use: ours, and any a config names with `stateDir`. */
export const memberStateDirs = (stateDir: string, networks: ReadonlyArray<OurNetwork>): Array<string> => {
  const dirs = new Set([path.resolve(stateDir)])
  for (const n of networks) {
    const own = n.plugin?.["stateDir"]
    if (n.mode === "member" && typeof own === "string" && own !== "") dirs.add(path.resolve(own))
  }
  return [...dirs]
}

export const defaultStateDir = () => process.env["CONTAINERSCALE_STATE_DIR"] || DEFAULT_STATE_DIR

import { AUTH_KEY_ENV, AUTH_KEY_FILE_ENV, DEFAULT_MTU, DEFAULT_STATE_DIR, STATE_DIR_ENV } from "@containerscale/core"
import * as fs from "node:fs"
import * as path from "node:path"

/**
 * The `-o` options of `podman network create -d containerscale-netavark`: the names of the Docker
 * driver's `containerscale.*` options, with underscores (Podman's own style) and no prefix.
 */
export const OPTION_KEYS = [
  "mode",
  "mtu",
  "tags",
  "hostname",
  "login_server",
  "auth_key_env",
  "auth_key_file",
  "auth_key",
  "tailscaled_path",
  "userspace",
  "magic_dns",
  "timeout",
  "state_dir"
] as const
export type OptionKey = typeof OPTION_KEYS[number]

export type Mode = "router" | "member"


export const DEFAULT_TIMEOUT_SECONDS = 60

const MEMBER_ONLY = [
  "tags",
  "hostname",
  "login_server",
  "auth_key_env",
  "auth_key_file",
  "auth_key",
  "tailscaled_path",
  "userspace",
  "magic_dns",
  "timeout"
] as const

export interface NetworkOptions {
  readonly mode: Mode
  readonly mtu: number
  readonly stateDir: string
  readonly timeoutSeconds: number
  readonly values: Readonly<Partial<Record<OptionKey, string>>>
}

/** A problem the user fixes: its message is what Podman shows. */
export class PluginError extends Error {}

const fail = (message: string): never => {
  throw new PluginError(message)
}

const isBool = (v: string | undefined) => v === undefined || v === "true" || v === "false"

/** The options as a string map; unknown keys are refused with the list of valid ones. */
export const optionValues = (options: unknown): Partial<Record<OptionKey, string>> => {
  if (options === undefined || options === null) return {}
  if (typeof options !== "object" || Array.isArray(options)) return fail(`"options" must be a map of strings`)
  const values: Partial<Record<OptionKey, string>> = {}
  for (const [key, raw] of Object.entries(options)) {
    if (!(OPTION_KEYS as ReadonlyArray<string>).includes(key)) {
      fail(`unknown option "${key}": valid options are ${OPTION_KEYS.join(", ")}`)
    }
    if (typeof raw !== "string") fail(`option "${key}" must be a string`)
    values[key as OptionKey] = raw as string
  }
  return values
}

/** The state directory: the option, else `CONTAINERSCALE_STATE_DIR`, else the default. */
export const stateDirOf = (values: Partial<Record<OptionKey, string>>, env: Readonly<Record<string, string | undefined>>) =>
  values.state_dir ?? (env[STATE_DIR_ENV]?.trim() || DEFAULT_STATE_DIR)

/**
 * Checks a network's options. Member mode also checks the auth key's source, so a wrong key file
 * fails `podman network create` rather than every `podman run`.
 */
export const parseNetworkOptions = (
  options: unknown,
  env: Readonly<Record<string, string | undefined>>,
  warn: (message: string) => void
): NetworkOptions => {
  const values = optionValues(options)
  const mode = values.mode ?? "router"
  if (mode !== "router" && mode !== "member") fail(`option mode must be "router" or "member", not "${mode}"`)
  let mtu = DEFAULT_MTU
  if (values.mtu !== undefined) {
    mtu = Number(values.mtu)
    if (!/^\d+$/.test(values.mtu) || mtu < 576 || mtu > 9000) {
      fail(`option mtu must be a whole number from 576 to 9000, not "${values.mtu}" (default ${DEFAULT_MTU})`)
    }
  }
  for (const k of ["userspace", "magic_dns"] as const) {
    if (!isBool(values[k])) fail(`option ${k} must be "true" or "false", not "${values[k]}"`)
  }
  let timeoutSeconds = DEFAULT_TIMEOUT_SECONDS
  if (values.timeout !== undefined) {
    timeoutSeconds = Number(values.timeout.replace(/s$/, ""))
    if (!/^\d+s?$/.test(values.timeout) || timeoutSeconds < 1 || timeoutSeconds > 600) {
      fail(`option timeout must be seconds from 1 to 600 (such as 60 or 60s), not "${values.timeout}"`)
    }
  }
  const stateDir = stateDirOf(values, env)
  if (!path.isAbsolute(stateDir)) fail(`option state_dir must be an absolute path, not "${stateDir}"`)
  const memberOnly = MEMBER_ONLY.filter((k) => values[k] !== undefined)
  if (mode === "router" && memberOnly.length > 0) {
    fail(`${memberOnly.join(", ")} only apply to member mode: add -o mode=member or drop them`)
  }
  if (mode === "member") {
    const sources = (["auth_key_env", "auth_key_file", "auth_key"] as const).filter((k) => values[k] !== undefined)
    if (sources.length > 1) fail(`give one auth key source, not ${sources.join(" and ")}`)
    if (values.login_server !== undefined && !/^(https?:\/\/\S+|unix:\/\S+)$/.test(values.login_server)) {
      fail(`option login_server must be an http(s) URL, not "${values.login_server}"`)
    }
    const tsd = values.tailscaled_path
    if (tsd !== undefined && (tsd === "" || (tsd.includes("/") && !path.isAbsolute(tsd)))) {
      fail(`option tailscaled_path must be a command name or an absolute path, not "${tsd}"`)
    }
    if (values.tags !== undefined && values.tags.split(",").some((t) => !/^(tag:)?[A-Za-z0-9-]+$/.test(t.trim()))) {
      fail(`option tags must be a comma-separated list such as "tag:containers,tag:web", not "${values.tags}"`)
    }
    if (values.hostname !== undefined && !/^[A-Za-z0-9{}-]{1,63}$/.test(values.hostname)) {
      fail(`option hostname must be a DNS label (letters, digits, dashes; {name} and {id} are replaced), not "${values.hostname}"`)
    }
    authKeyText(values, env)
    if (values.auth_key !== undefined) {
      warn(
        `a literal auth_key was given: anyone who can run "podman network inspect" can read it; ` +
          `prefer -o auth_key_file=PATH or -o auth_key_env=VAR`
      )
    }
  }
  return { mode: mode as Mode, mtu, stateDir, timeoutSeconds, values }
}

/** The auth key from the source the options name, else the plugin's own environment. Never logged. */
export const authKeyText = (
  values: Partial<Record<OptionKey, string>>,
  env: Readonly<Record<string, string | undefined>>
): string => {
  const check = (key: string, origin: string) => {
    if (/\s/.test(key)) fail(`the auth key from ${origin} contains white space: check how it was written`)
    if (key.startsWith("tskey-client-")) fail(`the auth key from ${origin} is an OAuth client secret (tskey-client-...): mint an auth key with it first`)
    return key
  }
  const readFile = (file: string, origin: string) => {
    if (!path.isAbsolute(file)) fail(`the auth key file named by ${origin} must be an absolute path, not "${file}"`)
    let key = ""
    try {
      key = fs.readFileSync(file, "utf8").trim()
    } catch (e) {
      fail(`cannot read the auth key file ${file} named by ${origin}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} (the plugin reads it as the user podman runs as)`)
    }
    if (key === "") fail(`the auth key file ${file} named by ${origin} is empty`)
    return check(key, origin)
  }
  if (values.auth_key_env !== undefined) {
    const name = values.auth_key_env
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) fail(`option auth_key_env must name an environment variable, not "${name}"`)
    const key = env[name]?.trim()
    if (!key) fail(`option auth_key_env names ${name}, which is not set in the environment podman runs netavark with`)
    return check(key!, `$${name}`)
  }
  if (values.auth_key_file !== undefined) return readFile(values.auth_key_file, "option auth_key_file")
  if (values.auth_key !== undefined) {
    const key = values.auth_key.trim()
    if (key === "") fail(`option auth_key is empty`)
    return check(key, "option auth_key")
  }
  const ownEnv = env[AUTH_KEY_ENV]?.trim()
  if (ownEnv) return check(ownEnv, `$${AUTH_KEY_ENV}`)
  const file = env[AUTH_KEY_FILE_ENV]?.trim()
  if (file) return readFile(file, `$${AUTH_KEY_FILE_ENV}`)
  return fail(
    `member mode needs an auth key: add -o auth_key_file=PATH or -o auth_key_env=VAR, ` +
      `or set ${AUTH_KEY_ENV} / ${AUTH_KEY_FILE_ENV} in the environment podman runs with`
  )
}

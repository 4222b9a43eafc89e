import { DEFAULT_MTU } from "@containerscale/core"
import { AUTH_KEY_ENV, AUTH_KEY_FILE_ENV } from "@containerscale/core/member"
import * as fs from "node:fs"
import * as path from "node:path"
import type { Mode } from "./store.ts"

/** The `-o` options of `docker network create -d containerscale`, as `containerscale.<key>`. */
export const OPTION_KEYS = [
  "mode",
  "tags",
  "hostname",
  "login-server",
  "auth-key-env",
  "auth-key-file",
  "auth-key",
  "tailscaled-path",
  "userspace",
  "mtu"
] as const
export type OptionKey = typeof OPTION_KEYS[number]

export const PREFIX = "containerscale."

export interface NetworkOptions {
  readonly mode: Mode
  readonly mtu: number
  /** only the `containerscale.*` keys, prefix removed */
  readonly values: Readonly<Partial<Record<OptionKey, string>>>
}

export class OptionError extends Error {}

const validList = () => OPTION_KEYS.map((k) => `${PREFIX}${k}`).join(", ")

/**
 * Checks the generic options (`com.docker.network.generic`). Unknown `containerscale.*` keys are
 * refused with the list of valid ones; keys of other prefixes are ignored (they belong to dockerd
 * or another tool). Member mode checks the auth key's source now, so a wrong key file fails
 * `docker network create` instead of every `docker run`.
 */
export const parseNetworkOptions = (
  generic: Readonly<Record<string, unknown>>,
  env: Readonly<Record<string, string | undefined>>,
  warn: (message: string) => void
): NetworkOptions => {
  const values: Partial<Record<OptionKey, string>> = {}
  for (const [key, raw] of Object.entries(generic)) {
    if (!key.startsWith(PREFIX)) continue
    const name = key.slice(PREFIX.length)
    if (!(OPTION_KEYS as ReadonlyArray<string>).includes(name)) {
      throw new OptionError(`unknown option ${key}: valid options are ${validList()}`)
    }
    if (typeof raw !== "string") throw new OptionError(`option ${key} must be a string`)
    values[name as OptionKey] = raw
  }
  const mode = values.mode ?? "router"
  if (mode !== "router" && mode !== "member") {
    throw new OptionError(`${PREFIX}mode must be "router" or "member", not "${mode}"`)
  }
  let mtu = DEFAULT_MTU
  if (values.mtu !== undefined) {
    mtu = Number(values.mtu)
    if (!/^\d+$/.test(values.mtu) || mtu < 576 || mtu > 9000) {
      throw new OptionError(`${PREFIX}mtu must be a whole number from 576 to 9000, not "${values.mtu}" (default ${DEFAULT_MTU})`)
    }
  }
  if (values.userspace !== undefined && values.userspace !== "true" && values.userspace !== "false") {
    throw new OptionError(`${PREFIX}userspace must be "true" or "false", not "${values.userspace}"`)
  }
  const memberOnly = (["tags", "hostname", "login-server", "auth-key-env", "auth-key-file", "auth-key", "tailscaled-path", "userspace"] as const)
    .filter((k) => values[k] !== undefined)
  if (mode === "router" && memberOnly.length > 0) {
    throw new OptionError(
      `${memberOnly.map((k) => PREFIX + k).join(", ")} only apply to member mode: add -o ${PREFIX}mode=member or drop them`
    )
  }
  if (mode === "member") {
    const sources = (["auth-key-env", "auth-key-file", "auth-key"] as const).filter((k) => values[k] !== undefined)
    if (sources.length > 1) {
      throw new OptionError(`give one auth key source, not ${sources.map((k) => PREFIX + k).join(" and ")}`)
    }
    if (values["login-server"] !== undefined && !/^(https?:\/\/\S+|unix:\/\S+)$/.test(values["login-server"])) {
      throw new OptionError(`${PREFIX}login-server must be an http(s) URL, not "${values["login-server"]}"`)
    }
    const tsd = values["tailscaled-path"]
    if (tsd !== undefined && tsd.includes("/") && !path.isAbsolute(tsd)) {
      throw new OptionError(`${PREFIX}tailscaled-path must be a command name or an absolute path, not "${tsd}"`)
    }
    if (values.tags !== undefined && values.tags.split(",").some((t) => !/^(tag:)?[A-Za-z0-9-]+$/.test(t.trim()))) {
      throw new OptionError(`${PREFIX}tags must be a comma-separated list such as "tag:containers,tag:web", not "${values.tags}"`)
    }
    authKeyText(values, env)
    if (values["auth-key"] !== undefined) {
      warn(
        `a literal ${PREFIX}auth-key was given: anyone who can run "docker network inspect" can read it; ` +
          `prefer ${PREFIX}auth-key-file or ${PREFIX}auth-key-env`
      )
    }
  }
  return { mode, mtu, values }
}

/** The auth key, read from the source the options name (or the driver's own environment). Never logged. */
export const authKeyText = (
  values: NetworkOptions["values"],
  env: Readonly<Record<string, string | undefined>>
): string => {
  const fromEnv = values["auth-key-env"]
  if (fromEnv !== undefined) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(fromEnv)) throw new OptionError(`${PREFIX}auth-key-env must name an environment variable, not "${fromEnv}"`)
    const key = env[fromEnv]?.trim()
    if (!key) throw new OptionError(`${PREFIX}auth-key-env names ${fromEnv}, which is not set in containerscale-docker's environment: set it in the driver's service (Environment= / EnvironmentFile=)`)
    return key
  }
  const file = values["auth-key-file"] ?? (values["auth-key"] === undefined ? env[AUTH_KEY_FILE_ENV]?.trim() || undefined : undefined)
  if (values["auth-key"] !== undefined) return values["auth-key"].trim()
  const ownEnv = env[AUTH_KEY_ENV]?.trim()
  if (values["auth-key-file"] === undefined && ownEnv) return ownEnv
  if (file !== undefined) {
    if (!path.isAbsolute(file)) throw new OptionError(`the auth key file must be an absolute path, not "${file}"`)
    let key: string
    try {
      key = fs.readFileSync(file, "utf8").trim()
    } catch (e) {
      throw new OptionError(`cannot read the auth key file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} (the driver reads it, as root, on the host)`)
    }
    if (key === "") throw new OptionError(`the auth key file ${file} is empty`)
    return key
  }
  throw new OptionError(
    `member mode needs an auth key: add -o ${PREFIX}auth-key-file=PATH or -o ${PREFIX}auth-key-env=VAR, ` +
      `or set ${AUTH_KEY_ENV} / ${AUTH_KEY_FILE_ENV} in containerscale-docker's environment`
  )
}

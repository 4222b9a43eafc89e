import { Effect, Schema } from "effect"
import * as path from "node:path"
import { InvalidNetworkConfig } from "./errors.ts"
import { DEFAULT_MTU } from "./router/attach.ts"
import { SSH_REFUSED, tailscaledFlagsProblem } from "./tailscale/memberReach.ts"

/**
 * The options of a containerscale network, once for every runtime. Each adapter only spells the
 * names its own way (CNI `loginServer`, Docker `containerscale.login-server`, Netavark
 * `login_server`) and hands them here: what an option means, its default and what a wrong value
 * is told are decided in this module and in `tailscale/memberSettings.ts`, nowhere else.
 */

export type Mode = "router" | "member"

/** The member-mode options, typed. CNI configs carry them as JSON; the other runtimes as strings. */
export const MemberOptions = Schema.Struct({
  /** the node's name on the tailnet: a template of `{name}` (pod or container name, else the id's first 12), `{pod}`, `{namespace}`, `{id}` */
  hostname: Schema.optional(Schema.String),
  tags: Schema.optional(Schema.Array(Schema.String)),
  loginServer: Schema.optional(Schema.String),
  /** false keeps the node (and its state) when the container goes; default true */
  ephemeral: Schema.optional(Schema.Boolean),
  acceptDns: Schema.optional(Schema.Boolean),
  acceptRoutes: Schema.optional(Schema.Boolean),
  userspace: Schema.optional(Schema.Boolean),
  magicDns: Schema.optional(Schema.Boolean),
  /** Tailscale SSH: only false is accepted, see `SSH_REFUSED` */
  ssh: Schema.optional(Schema.Boolean),
  stateDir: Schema.optional(Schema.String),
  tailscaledPath: Schema.optional(Schema.String),
  tailscaledFlags: Schema.optional(Schema.Array(Schema.String)),
  tailscaleFlags: Schema.optional(Schema.Array(Schema.String)),
  timeoutSeconds: Schema.optional(Schema.Number),
  /** the key itself, or `file:PATH` */
  authKey: Schema.optional(Schema.String),
  authKeyFile: Schema.optional(Schema.String),
  /** the name of an environment variable of the plugin (or driver) that holds the key */
  authKeyEnv: Schema.optional(Schema.String)
})
export type MemberOptions = typeof MemberOptions.Type

/** The member options that say a config is for member mode (`stateDir` is every mode's). */
const MEMBER_ONLY = Object.keys(MemberOptions.fields).filter((k) => k !== "stateDir")

/**
 * The mode of a CNI config: its `mode`, else router, the default of every runtime, except that a
 * config carrying member options (or a runtime's `authKey`) and no `mode` is member mode: that is
 * what a ContainerScale config looks like, so those keep working unchanged. Docker and Podman
 * networks have no such configs: a member option without `mode=member` is refused there.
 */
export const cniModeOf = (config: Readonly<Record<string, unknown>>): unknown => {
  if (config["mode"] !== undefined) return config["mode"]
  const runtimeKey = (config["runtimeConfig"] as { authKey?: unknown } | undefined)?.authKey
  return runtimeKey !== undefined || MEMBER_ONLY.some((k) => config[k] !== undefined) ? "member" : "router"
}

/** The options given as strings (Docker's `-o`, Podman's `-o`), in the order error messages list them. */
export const STRING_OPTIONS = [
  "mode",
  "mtu",
  "tags",
  "hostname",
  "loginServer",
  "authKeyEnv",
  "authKeyFile",
  "authKey",
  "tailscaledPath",
  "userspace",
  "magicDns",
  "acceptDns",
  "acceptRoutes",
  "ephemeral",
  "ssh",
  "timeout",
  "stateDir"
] as const
export type StringOption = typeof STRING_OPTIONS[number]

/** How a runtime spells the options (and so how error messages name them), and where the plugin runs. */
export interface Spelling {
  /** the option's name as the user writes it */
  readonly name: (option: StringOption | keyof MemberOptions) => string
  /** how the user sets an option, e.g. `-o containerscale.auth-key-file=PATH` */
  readonly set: (option: StringOption | keyof MemberOptions, value: string) => string
  /** where `CONTAINERSCALE_AUTH_KEY` and `authKeyEnv` are read, e.g. "containerscale-docker's environment" */
  readonly environment: string
  /** who reads an auth key file, e.g. "containerscale-docker, as root on the host" */
  readonly reader: string
}

const words = (option: string) =>
  (option === "timeoutSeconds" ? "timeout" : option).replace(/[A-Z]/g, (c) => ` ${c.toLowerCase()}`).split(" ")

/** `loginServer` as `login-server` (Docker, after its prefix) or `login_server` (Podman); `timeoutSeconds` as `timeout`. */
export const spelled = (separator: "-" | "_", prefix = "") => (option: string) => prefix + words(option).join(separator)

export interface NetworkOptions {
  readonly mode: Mode
  readonly mtu: number
  readonly member: MemberOptions
}

export const MTU_RANGE = { minimum: 576, maximum: 9000 } as const
export const TIMEOUT_RANGE = { minimum: 1, maximum: 600 } as const
export const DEFAULT_TIMEOUT_SECONDS = 30

/** An http(s) URL, or `unix:/PATH` (tests reach a control server on a socket) */
export const LOGIN_SERVER = /^(https?:\/\/\S+|unix:\/\S+)$/
const TAG = /^(tag:)?[A-Za-z0-9-]+$/
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/

const invalid = (message: string) => new InvalidNetworkConfig({ message })

const bool = (value: string, name: string) => {
  if (value !== "true" && value !== "false") throw invalid(`option ${name} must be "true" or "false", not "${value}"`)
  return value === "true"
}

const list = (value: string) => value.split(",").map((v) => v.trim()).filter((v) => v !== "")

/**
 * Decodes a network's string options, keyed as the runtime spells them. Unknown keys are refused
 * with the list of valid ones.
 */
export const decodeStringOptions = (
  values: Readonly<Record<string, string>>,
  spelling: Spelling,
  accepted: ReadonlyArray<StringOption> = STRING_OPTIONS
): Effect.Effect<NetworkOptions, InvalidNetworkConfig> =>
  Effect.try({
    try: () => {
      const name = spelling.name
      const member: { -readonly [K in keyof MemberOptions]: MemberOptions[K] } = {}
      let mode: Mode = "router"
      let mtu = DEFAULT_MTU
      for (const [key, value] of Object.entries(values)) {
        const option = accepted.find((o) => name(o) === key)
        if (option === undefined) {
          throw invalid(`unknown option "${key}": valid options are ${accepted.map(name).join(", ")}`)
        }
        const n = name(option)
        switch (option) {
          case "mode":
            if (value !== "router" && value !== "member") throw invalid(`option ${n} must be "router" or "member", not "${value}"`)
            mode = value
            break
          case "mtu":
            mtu = Number(value)
            if (!/^\d+$/.test(value) || mtu < MTU_RANGE.minimum || mtu > MTU_RANGE.maximum) {
              throw invalid(
                `option ${n} must be a whole number from ${MTU_RANGE.minimum} to ${MTU_RANGE.maximum}, not "${value}" (default ${DEFAULT_MTU})`
              )
            }
            break
          case "tags":
            member.tags = list(value)
            break
          case "timeout": {
            const seconds = /^(\d+)s?$/.exec(value)
            member.timeoutSeconds = seconds === null ? Number.NaN : Number(seconds[1])
            break
          }
          case "userspace":
          case "magicDns":
          case "acceptDns":
          case "acceptRoutes":
          case "ephemeral":
          case "ssh":
            member[option] = bool(value, n)
            break
          default:
            member[option] = value
        }
      }
      const options = { mode, mtu, member }
      checkNetworkOptions(options, spelling)
      return options
    },
    catch: (e) => (e instanceof InvalidNetworkConfig ? e : invalid(String(e)))
  })

/** The checks that need no file and no environment, whatever runtime the options came from. Throws. */
export const checkNetworkOptions = (options: NetworkOptions, spelling: Spelling): void => {
  const name = spelling.name
  const m = options.member
  const given = (Object.keys(m) as Array<keyof MemberOptions>).filter((k) => m[k] !== undefined && k !== "stateDir")
  if (options.mode === "router" && given.length > 0) {
    throw invalid(`${given.map(name).join(", ")} only apply to member mode: add ${spelling.set("mode", "member")} or drop them`)
  }
  if (m.stateDir !== undefined && !m.stateDir.startsWith("/")) {
    throw invalid(`option ${name("stateDir")} must be an absolute path, not "${m.stateDir}"`)
  }
  if (m.timeoutSeconds !== undefined && !(m.timeoutSeconds >= TIMEOUT_RANGE.minimum && m.timeoutSeconds <= TIMEOUT_RANGE.maximum)) {
    throw invalid(`option ${name("timeout")} must be seconds from 1 to 600 (such as 60 or 60s), not "${m.timeoutSeconds}"`)
  }
  if (m.loginServer !== undefined && !LOGIN_SERVER.test(m.loginServer)) {
    throw invalid(`option ${name("loginServer")} must be an http(s) URL, not "${m.loginServer}"`)
  }
  const tsd = m.tailscaledPath
  if (tsd !== undefined && (tsd === "" || (tsd.includes("/") && !tsd.startsWith("/")))) {
    throw invalid(`option ${name("tailscaledPath")} must be a command name or an absolute path, not "${tsd}"`)
  }
  if (tsd !== undefined && /^\/(var\/)?run(\/|$)/.test(path.posix.normalize(tsd))) {
    throw invalid(`option ${name("tailscaledPath")} must not be under /run: a member's tailscaled runs with an empty /run of its own`)
  }
  if (m.tags !== undefined && m.tags.some((t) => !TAG.test(t))) {
    throw invalid(`option ${name("tags")} must be a comma-separated list such as "tag:containers,tag:web", not "${m.tags.join(",")}"`)
  }
  if (m.ssh === true) throw invalid(`option ${name("ssh")}: ${SSH_REFUSED}`)
  const daemonFlags = tailscaledFlagsProblem(m.tailscaledFlags ?? [], name("tailscaledFlags"))
  if (daemonFlags !== undefined) throw invalid(daemonFlags)
  const sources = (["authKeyEnv", "authKeyFile", "authKey"] as const).filter((k) => m[k] !== undefined)
  if (sources.length > 1) throw invalid(`give one auth key source, not ${sources.map(name).join(" and ")}`)
  if (m.authKeyEnv !== undefined && !ENV_NAME.test(m.authKeyEnv)) {
    throw invalid(`option ${name("authKeyEnv")} must name an environment variable, not "${m.authKeyEnv}"`)
  }
}

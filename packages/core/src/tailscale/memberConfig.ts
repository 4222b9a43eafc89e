import { Effect, Redacted, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { InvalidNetworkConfig } from "../errors.ts"
import { describeIssue } from "../issue.ts"
import { AUTH_KEY_ENV, AUTH_KEY_FILE_ENV, DEFAULT_STATE_DIR, memberRoot } from "../state.ts"
import type { MemberPrefs } from "./member.ts"

/**
 * The member-mode keys of a network config, the same for every adapter. ContainerScale's keys
 * (`runtimeConfig.authKey`, `tailscaledFlags`, `tailscaleFlags`) keep working; our own keys win
 * over what `tailscaleFlags` says.
 */
export const MemberConfig = Schema.Struct({
  hostname: Schema.optional(Schema.String),
  tags: Schema.optional(Schema.Array(Schema.String)),
  loginServer: Schema.optional(Schema.String),
  ephemeral: Schema.optional(Schema.Boolean),
  acceptDns: Schema.optional(Schema.Boolean),
  acceptRoutes: Schema.optional(Schema.Boolean),
  userspace: Schema.optional(Schema.Boolean),
  magicDns: Schema.optional(Schema.Boolean),
  stateDir: Schema.optional(Schema.String),
  tailscaledPath: Schema.optional(Schema.String),
  tailscaledFlags: Schema.optional(Schema.Array(Schema.String)),
  tailscaleFlags: Schema.optional(Schema.Array(Schema.String)),
  timeoutSeconds: Schema.optional(Schema.Number.check(Schema.isBetween({ minimum: 1, maximum: 600 }))),
  authKey: Schema.optional(Schema.String),
  runtimeConfig: Schema.optional(Schema.Struct({ authKey: Schema.optional(Schema.String) }))
})
export type MemberConfig = typeof MemberConfig.Type

const decodeMemberConfig = Schema.decodeUnknownEffect(MemberConfig, { errors: "all" })

/** Where the auth key comes from, strongest first. */
export { AUTH_KEY_ENV, AUTH_KEY_FILE_ENV }

/** The workload a container belongs to, as the runtime names it. */
export interface Workload {
  readonly containerId: string
  readonly podName?: string | undefined
  readonly podNamespace?: string | undefined
}

export interface MemberSettings {
  readonly prefs: MemberPrefs
  readonly authKey: Redacted.Redacted<string> | undefined
  readonly persistent: boolean
  readonly userspace: boolean
  readonly magicDns: boolean
  /** the node's state directory */
  readonly stateDir: string
  /** where the member folders are: `member/` in the state directory */
  readonly memberRoot: string
  readonly tailscaled: string
  readonly extraFlags: ReadonlyArray<string>
  readonly timeoutSeconds: number
  readonly identity: string
}

const invalid = (message: string) => new InvalidNetworkConfig({ message })

/** A DNS label from any text: lowercase letters, digits and dashes, at most 63. */
export const dnsLabel = (text: string) =>
  text.toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 63).replace(/-+$/, "") || "container"

const expandHostname = (template: string, w: Workload) =>
  template.replace(/\{(pod|namespace|id)\}/g, (_, k: string) =>
    k === "pod" ? w.podName ?? w.containerId.slice(0, 12) : k === "namespace" ? w.podNamespace ?? "" : w.containerId.slice(0, 12))

const tag = (t: string) => (t.startsWith("tag:") ? t : `tag:${t}`)

/** `tailscale up` flags, the subset that maps onto prefs; anything else is refused. */
interface FlagPrefs {
  hostname?: string
  loginServer?: string
  tags?: ReadonlyArray<string>
  routes?: ReadonlyArray<string>
  acceptDns?: boolean
  acceptRoutes?: boolean
  shieldsUp?: boolean
  ssh?: boolean
  authKey?: string
  timeoutSeconds?: number
}

const BOOLEAN_FLAGS = { "accept-dns": "acceptDns", "accept-routes": "acceptRoutes", "shields-up": "shieldsUp", "ssh": "ssh" } as const
const VALUE_FLAGS = ["hostname", "login-server", "advertise-tags", "advertise-routes", "auth-key", "authkey", "timeout"] as const

const parseTailscaleFlags = (flags: ReadonlyArray<string>): Effect.Effect<FlagPrefs, InvalidNetworkConfig> =>
  Effect.suspend(() => {
    const out: FlagPrefs = {}
    for (let i = 0; i < flags.length; i++) {
      const m = /^--?([a-z-]+)(?:=(.*))?$/.exec(flags[i]!)
      if (m === null) return Effect.fail(invalid(`tailscaleFlags: "${flags[i]}" is not a flag`))
      const [, name, inline] = m as unknown as [string, string, string | undefined]
      if (name in BOOLEAN_FLAGS) {
        if (inline !== undefined && inline !== "true" && inline !== "false") {
          return Effect.fail(invalid(`tailscaleFlags: --${name} takes true or false, not "${inline}"`))
        }
        out[BOOLEAN_FLAGS[name as keyof typeof BOOLEAN_FLAGS]] = inline !== "false"
        continue
      }
      if (name === "reset") continue
      if (!(VALUE_FLAGS as ReadonlyArray<string>).includes(name)) {
        return Effect.fail(invalid(
          `tailscaleFlags: --${name} is not supported; use ${[...VALUE_FLAGS, ...Object.keys(BOOLEAN_FLAGS), "reset"].map((f) => `--${f}`).join(", ")}`
        ))
      }
      const value = inline ?? flags[++i]
      if (value === undefined) return Effect.fail(invalid(`tailscaleFlags: --${name} needs a value`))
      const list = () => value.split(",").map((v) => v.trim()).filter((v) => v !== "")
      if (name === "hostname") out.hostname = value
      else if (name === "login-server") out.loginServer = value
      else if (name === "advertise-tags") out.tags = list()
      else if (name === "advertise-routes") out.routes = list()
      else if (name === "timeout") {
        const seconds = /^(\d+)s?$/.exec(value)
        if (seconds === null) return Effect.fail(invalid(`tailscaleFlags: --timeout takes seconds such as 30s, not "${value}"`))
        out.timeoutSeconds = Number(seconds[1])
      } else out.authKey = value
    }
    return Effect.succeed(out)
  })

const readKeyFile = (file: string, origin: string) =>
  Effect.try({
    try: () => fs.readFileSync(file, "utf8").trim(),
    catch: (e) => invalid(`cannot read the auth key file ${file} named by ${origin}: ${(e as Error).message}`)
  })

/**
 * The auth key from the strongest source present: `CONTAINERSCALE_AUTH_KEY`, the file named by
 * `CONTAINERSCALE_AUTH_KEY_FILE`, `runtimeConfig.authKey`, `authKey`, `--auth-key` in
 * `tailscaleFlags`. A config value `file:PATH` is read from PATH, as the tailscale CLI does.
 */
const authKeyOf = (config: MemberConfig, flags: FlagPrefs, env: Readonly<Record<string, string | undefined>>) =>
  Effect.gen(function*() {
    const fromEnv = env[AUTH_KEY_ENV]?.trim()
    if (fromEnv) return fromEnv
    const file = env[AUTH_KEY_FILE_ENV]?.trim()
    if (file) return yield* readKeyFile(file, AUTH_KEY_FILE_ENV)
    const fromConfig = config.runtimeConfig?.authKey ?? config.authKey ?? flags.authKey
    if (fromConfig?.startsWith("file:")) return yield* readKeyFile(fromConfig.slice(5), "the config's file: key")
    return fromConfig?.trim()
  }).pipe(Effect.flatMap((key) => {
    if (key === undefined || key === "") return Effect.succeed(undefined)
    if (/\s/.test(key)) return Effect.fail(invalid(`the auth key contains white space: check how it was written`))
    if (key.startsWith("tskey-client-")) {
      return Effect.fail(invalid(`an OAuth client secret (tskey-client-...) is not an auth key: mint an auth key with it first`))
    }
    return Effect.succeed(Redacted.make(key, { label: "authKey" }))
  }))

/**
 * Decodes and resolves a member network's settings for one container. The auth key is read only
 * for `withAuthKey` (ADD): leaving, checking and collecting must work whatever state the key is in.
 */
export const resolveMemberSettings = (
  raw: unknown,
  network: string,
  workload: Workload,
  env: Readonly<Record<string, string | undefined>>,
  options: { readonly withAuthKey: boolean }
): Effect.Effect<MemberSettings, InvalidNetworkConfig> =>
  Effect.gen(function*() {
    const config = yield* decodeMemberConfig(raw).pipe(
      Effect.mapError((e) => invalid(`invalid network configuration: ${describeIssue(e.issue)}`))
    )
    const flags = yield* parseTailscaleFlags(config.tailscaleFlags ?? [])
    const stateDir = config.stateDir ?? env["CONTAINERSCALE_STATE_DIR"] ?? DEFAULT_STATE_DIR
    if (!path.isAbsolute(stateDir)) return yield* invalid(`stateDir must be an absolute path, not "${stateDir}"`)
    const tailscaled = config.tailscaledPath ?? "tailscaled"
    if (tailscaled.includes("/") && !path.isAbsolute(tailscaled)) {
      return yield* invalid(`tailscaledPath must be a command name or an absolute path, not "${tailscaled}"`)
    }
    const loginServer = config.loginServer ?? flags.loginServer
    if (loginServer !== undefined && !/^(https?:\/\/\S+|unix:\/\S+)$/.test(loginServer)) {
      return yield* invalid(`loginServer must be an http(s) URL, not "${loginServer}"`)
    }
    const hostname = dnsLabel(expandHostname(config.hostname ?? flags.hostname ?? "{pod}", workload))
    const workloadName = workload.podName === undefined
      ? workload.containerId
      : workload.podNamespace === undefined ? workload.podName : `${workload.podNamespace}_${workload.podName}`
    return {
      prefs: {
        hostname,
        loginServer,
        tags: (config.tags ?? flags.tags ?? []).map(tag),
        acceptDns: config.acceptDns ?? flags.acceptDns ?? false,
        acceptRoutes: config.acceptRoutes ?? flags.acceptRoutes ?? false,
        advertiseRoutes: flags.routes,
        shieldsUp: flags.shieldsUp,
        ssh: flags.ssh
      },
      authKey: options.withAuthKey ? yield* authKeyOf(config, flags, env) : undefined,
      persistent: config.ephemeral === false,
      userspace: config.userspace ?? false,
      magicDns: config.magicDns ?? true,
      stateDir,
      memberRoot: memberRoot(stateDir),
      tailscaled,
      extraFlags: config.tailscaledFlags ?? [],
      timeoutSeconds: config.timeoutSeconds ?? flags.timeoutSeconds ?? 30,
      identity: `${network}_${workloadName}`
    }
  })

import { Effect, Redacted } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { InvalidNetworkConfig } from "../errors.ts"
import {
  checkNetworkOptions,
  DEFAULT_TIMEOUT_SECONDS,
  LOGIN_SERVER,
  type MemberOptions,
  type Spelling
} from "../networkOptions.ts"
import { DEFAULT_MTU } from "../router/attach.ts"
import { AUTH_KEY_ENV, AUTH_KEY_FILE_ENV, DEFAULT_STATE_DIR, memberRoot, STATE_DIR_ENV } from "../state.ts"
import { REFUSED_TAILSCALE_FLAGS } from "./memberReach.ts"
import { type MemberPrefs, memberIdentity } from "./tailscaled.ts"

/** Where the auth key comes from when the network names no source: a value, or a file. */
export { AUTH_KEY_ENV, AUTH_KEY_FILE_ENV }

/** One container on a member network, as every runtime can describe it. */
export interface MemberAttachment {
  /** the network's name (Docker: `docker-` and the network id's first 12) */
  readonly network: string
  readonly containerId: string
  /** names the attachment (CNI_IFNAME, Podman's interface name, `docker`) */
  readonly ifname: string
  /** the container's network namespace, by path (ADD only) */
  readonly netns?: string | undefined
  /** the pod's or container's name, when the runtime gives one */
  readonly name?: string | undefined
  readonly namespace?: string | undefined
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
  /**
   * Names the member's folder (and keeps a persistent node): `memberIdentity` of the network's name
   * and the workload's namespace and name, or of its container id when the runtime gives no name.
   */
  readonly identity: string
}

const invalid = (message: string) => new InvalidNetworkConfig({ message })

/** A DNS label from any text: lowercase letters, digits and dashes, at most 63. */
export const dnsLabel = (text: string) =>
  text.toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 63).replace(/-+$/, "") || "container"

const expandHostname = (template: string, a: MemberAttachment) =>
  template.replace(/\{(name|pod|namespace|id)\}/g, (_, k: string) =>
    k === "namespace" ? a.namespace ?? "" : k === "id" ? a.containerId.slice(0, 12) : a.name ?? a.containerId.slice(0, 12))

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
  authKey?: string
  timeoutSeconds?: number
}

const BOOLEAN_FLAGS = { "accept-dns": "acceptDns", "accept-routes": "acceptRoutes", "shields-up": "shieldsUp" } as const
const VALUE_FLAGS = ["hostname", "login-server", "advertise-tags", "advertise-routes", "auth-key", "authkey", "timeout"] as const

const parseTailscaleFlags = (flags: ReadonlyArray<string>): Effect.Effect<FlagPrefs, InvalidNetworkConfig> =>
  Effect.suspend(() => {
    const out: FlagPrefs = {}
    for (let i = 0; i < flags.length; i++) {
      const m = /^--?([a-z-]+)(?:=(.*))?$/.exec(flags[i]!)
      if (m === null) return Effect.fail(invalid(`tailscaleFlags: "${flags[i]}" is not a flag`))
      const [, name, inline] = m as unknown as [string, string, string | undefined]
      const refused = REFUSED_TAILSCALE_FLAGS[name]
      if (refused !== undefined && inline !== "false") return Effect.fail(invalid(`tailscaleFlags: --${name}: ${refused}`))
      if (refused !== undefined) continue
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

const keyFrom = (key: string, origin: string) => {
  if (key === "") return Effect.fail(invalid(`the auth key from ${origin} is empty`))
  if (/\s/.test(key)) return Effect.fail(invalid(`the auth key from ${origin} contains white space: check how it was written`))
  if (key.startsWith("tskey-client-")) {
    return Effect.fail(invalid(`the auth key from ${origin} is an OAuth client secret (tskey-client-...): mint an auth key with it first`))
  }
  return Effect.succeed(Redacted.make(key, { label: "authKey" }))
}

const readKeyFile = (file: string, origin: string, spelling: Spelling) =>
  path.isAbsolute(file)
    ? Effect.try({
      try: () => fs.readFileSync(file, "utf8").trim(),
      catch: (e) =>
        invalid(
          `cannot read the auth key file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} ` +
            `(named by ${origin}; read by ${spelling.reader})`
        )
    }).pipe(Effect.flatMap((key) => keyFrom(key, `the file ${file}`)))
    : Effect.fail(invalid(`the auth key file named by ${origin} must be an absolute path, not "${file}"`))

/**
 * The auth key, from one place, in this order:
 * 1. the source the network names, at most one: `authKeyEnv` (that variable of the plugin's
 *    environment), `authKeyFile`, or `authKey` (the key, or `file:PATH`); `--auth-key` in
 *    `tailscaleFlags` counts as `authKey`;
 * 2. `CONTAINERSCALE_AUTH_KEY` in the plugin's (driver's) environment;
 * 3. the file named by `CONTAINERSCALE_AUTH_KEY_FILE`.
 * What a network names wins over the process's default, so one driver can serve networks with
 * different keys. A source that is named but empty or unreadable is an error, never skipped.
 */
export const resolveAuthKey = (
  options: MemberOptions,
  env: Readonly<Record<string, string | undefined>>,
  spelling: Spelling
): Effect.Effect<Redacted.Redacted<string> | undefined, InvalidNetworkConfig> =>
  Effect.gen(function*() {
    const name = spelling.name
    if (options.authKeyEnv !== undefined) {
      const key = env[options.authKeyEnv]?.trim()
      if (!key) {
        return yield* invalid(
          `option ${name("authKeyEnv")} names ${options.authKeyEnv}, which is not set in ${spelling.environment}`
        )
      }
      return yield* keyFrom(key, `$${options.authKeyEnv}`)
    }
    if (options.authKeyFile !== undefined) return yield* readKeyFile(options.authKeyFile, `option ${name("authKeyFile")}`, spelling)
    const literal = options.authKey ?? (yield* parseTailscaleFlags(options.tailscaleFlags ?? [])).authKey
    if (literal !== undefined) {
      return literal.startsWith("file:")
        ? yield* readKeyFile(literal.slice(5), `option ${name("authKey")}`, spelling)
        : yield* keyFrom(literal.trim(), `option ${name("authKey")}`)
    }
    const fromEnv = env[AUTH_KEY_ENV]?.trim()
    if (fromEnv) return yield* keyFrom(fromEnv, `$${AUTH_KEY_ENV}`)
    const file = env[AUTH_KEY_FILE_ENV]?.trim()
    if (file) return yield* readKeyFile(file, `$${AUTH_KEY_FILE_ENV}`, spelling)
    return undefined
  })

/**
 * What a runtime checks when a member network is created, so a wrong key source fails there and
 * not at every container start: the options, and that a key can be read. Returns warnings.
 */
export const checkMemberNetwork = (
  options: MemberOptions,
  env: Readonly<Record<string, string | undefined>>,
  spelling: Spelling
): Effect.Effect<ReadonlyArray<string>, InvalidNetworkConfig> =>
  Effect.gen(function*() {
    yield* checkMemberOptions(options, spelling)
    const key = yield* resolveAuthKey(options, env, spelling)
    if (key === undefined) return yield* invalid(`member mode needs an auth key: ${missingKeyFix(spelling)}`)
    return options.authKey === undefined || options.authKey.startsWith("file:") ? [] : [
      `a literal ${spelling.name("authKey")} was given: anyone who can read the network's configuration can read it; ` +
      `prefer ${spelling.set("authKeyFile", "PATH")} or ${spelling.set("authKeyEnv", "VAR")}`
    ]
  })

/** What to do when no auth key was found, in the runtime's words. */
export const missingKeyFix = (spelling: Spelling) =>
  `add ${spelling.set("authKeyFile", "PATH")} or ${spelling.set("authKeyEnv", "VAR")}, ` +
  `or set ${AUTH_KEY_ENV} / ${AUTH_KEY_FILE_ENV} in ${spelling.environment}`

const checkMemberOptions = (options: MemberOptions, spelling: Spelling) =>
  Effect.try({
    try: () => checkNetworkOptions({ mode: "member", mtu: DEFAULT_MTU, member: options }, spelling),
    catch: (e) => (e instanceof InvalidNetworkConfig ? e : invalid(String(e)))
  })

/**
 * The node's state directory for a member network: all that leaving and collecting need, so a
 * container whose network was refused at ADD (or changed since) can still be deleted.
 */
export const memberStateDir = (options: MemberOptions, env: Readonly<Record<string, string | undefined>>, spelling: Spelling) =>
  Effect.suspend(() => {
    const stateDir = options.stateDir ?? (env[STATE_DIR_ENV] || DEFAULT_STATE_DIR)
    return path.isAbsolute(stateDir)
      ? Effect.succeed(stateDir)
      : Effect.fail(invalid(`${options.stateDir === undefined ? STATE_DIR_ENV : spelling.name("stateDir")} must be an absolute path, not "${stateDir}"`))
  })

/**
 * A member network's settings for one container. The auth key is read only `withAuthKey` (ADD):
 * leaving, checking and collecting must work whatever state the key is in.
 */
export const resolveMemberSettings = (
  options: MemberOptions,
  attachment: MemberAttachment,
  env: Readonly<Record<string, string | undefined>>,
  spelling: Spelling,
  settings: { readonly withAuthKey: boolean }
): Effect.Effect<MemberSettings, InvalidNetworkConfig> =>
  Effect.gen(function*() {
    yield* checkMemberOptions(options, spelling)
    const flags = yield* parseTailscaleFlags(options.tailscaleFlags ?? [])
    const stateDir = yield* memberStateDir(options, env, spelling)
    const loginServer = options.loginServer ?? flags.loginServer
    if (loginServer !== undefined && !LOGIN_SERVER.test(loginServer)) {
      return yield* invalid(`--login-server in ${spelling.name("tailscaleFlags")} must be an http(s) URL, not "${loginServer}"`)
    }
    const hostname = dnsLabel(expandHostname(options.hostname ?? flags.hostname ?? "{name}", attachment))
    const workload = attachment.name === undefined
      ? [attachment.containerId]
      : attachment.namespace === undefined ? [attachment.name] : [attachment.namespace, attachment.name]
    return {
      prefs: {
        hostname,
        loginServer,
        tags: (options.tags ?? flags.tags ?? []).map(tag),
        acceptDns: options.acceptDns ?? flags.acceptDns ?? false,
        acceptRoutes: options.acceptRoutes ?? flags.acceptRoutes ?? false,
        advertiseRoutes: flags.routes,
        shieldsUp: flags.shieldsUp
      },
      authKey: settings.withAuthKey ? yield* resolveAuthKey(options, env, spelling) : undefined,
      persistent: options.ephemeral === false,
      userspace: options.userspace ?? false,
      magicDns: options.magicDns ?? true,
      stateDir,
      memberRoot: memberRoot(stateDir),
      tailscaled: options.tailscaledPath ?? "tailscaled",
      extraFlags: options.tailscaledFlags ?? [],
      timeoutSeconds: options.timeoutSeconds ?? flags.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS,
      identity: memberIdentity([attachment.network, ...workload])
    }
  })

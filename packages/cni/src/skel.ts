import {
  CniCode,
  DecodeFailure,
  IncompatibleVersion,
  InvalidEnvironment,
  validateAttachment,
  validateNetworkName
} from "@containerscale/core"
import { Cause, Effect, Predicate, Schema } from "effect"
import * as fs from "node:fs"
import { decodeNetworkConfig, type NetworkConfig } from "./config.ts"
import { type CniResult, encodeResult } from "./result.ts"
import { type Command, commandSince, compareVersions, isSupported, supportedVersions } from "./version.ts"

/**
 * The CNI skel: reads the `CNI_*` environment and the stdin config, negotiates the version,
 * dispatches to a plugin, and turns its answer into stdout and an exit code as the spec says.
 * It does no I/O itself, so a binary and a test drive it the same way.
 */

export interface Attachment {
  readonly containerId: string
  readonly ifname: string
}

export interface CniRequest extends Attachment {
  readonly cniVersion: string
  /** `CNI_NETNS`, or undefined when empty (DEL may come without one) */
  readonly netns: string | undefined
  /** `CNI_ARGS` as key/value pairs */
  readonly args: ReadonlyMap<string, string>
  /** `CNI_PATH` split into directories */
  readonly path: ReadonlyArray<string>
  readonly config: NetworkConfig
  /** the config exactly as received, for keys the schema does not type and for delegation */
  readonly raw: Readonly<Record<string, unknown>>
  readonly stdin: string
  readonly env: Readonly<Record<string, string | undefined>>
}

export interface GcRequest extends Omit<CniRequest, keyof Attachment | "netns" | "args"> {
  /** the attachments still in use, or undefined when the runtime sent no list (then nothing may go) */
  readonly valid: ReadonlyArray<Attachment> | undefined
}

export type StatusRequest = Omit<GcRequest, "valid">

/** An error a plugin reports: any tagged error of the core carries its CNI code. */
export interface PluginError {
  readonly cniCode: number
  readonly message: string
  readonly details?: string | undefined
}

export interface Plugin<R = never> {
  readonly add: (request: CniRequest) => Effect.Effect<CniResult, PluginError, R>
  readonly del: (request: CniRequest) => Effect.Effect<void, PluginError, R>
  readonly check: (request: CniRequest) => Effect.Effect<void, PluginError, R>
  readonly gc: (request: GcRequest) => Effect.Effect<void, PluginError, R>
  readonly status: (request: StatusRequest) => Effect.Effect<void, PluginError, R>
}

export interface SkelInput {
  readonly env: Readonly<Record<string, string | undefined>>
  readonly stdin: string
}

export interface SkelOutput {
  readonly stdout: string
  readonly exitCode: number
}

const commands: ReadonlyArray<Command> = ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"]
const LATEST = supportedVersions[supportedVersions.length - 1]!

const present = (v: string | undefined) => (v === undefined || v === "" ? undefined : v)

export const parseCniArgs = (text: string | undefined): Effect.Effect<ReadonlyMap<string, string>, InvalidEnvironment> => {
  const args = new Map<string, string>()
  for (const pair of (text ?? "").split(";")) {
    if (pair === "") continue
    const eq = pair.indexOf("=")
    if (eq <= 0) {
      return Effect.fail(new InvalidEnvironment({ message: `CNI_ARGS: "${pair}" is not a KEY=VALUE pair` }))
    }
    args.set(pair.slice(0, eq), pair.slice(eq + 1))
  }
  return Effect.succeed(args)
}

/** ADD's namespace: the runtime must have made it, and it is a file (a bind mount of one), not a folder. */
export const containerNetns = (request: CniRequest): Effect.Effect<string, InvalidEnvironment> => {
  const netns = request.netns ?? ""
  let folder: boolean
  try {
    folder = fs.statSync(netns).isDirectory()
  } catch {
    return Effect.fail(new InvalidEnvironment({
      message: `CNI_NETNS ${netns} does not exist: the runtime must create the container's network namespace before ADD`
    }))
  }
  return folder
    ? Effect.fail(new InvalidEnvironment({ message: `CNI_NETNS ${netns} is a folder, not a network namespace` }))
    : Effect.succeed(netns)
}

/** Specific addresses asked for: `CNI_ARGS` `IP=` (comma separated), `args.cni.ips`, `runtimeConfig.ips`. */
export const requestedAddresses = (request: CniRequest): ReadonlyArray<string> => {
  const fromArgs = request.args.get("IP")?.split(",").map((s) => s.trim()).filter((s) => s !== "") ?? []
  return [...new Set([...fromArgs, ...(request.config.args?.cni?.ips ?? []), ...(request.config.runtimeConfig?.ips ?? [])])]
}

const RawConfig = Schema.Record(Schema.String, Schema.Unknown)
const decodeRaw = Schema.decodeUnknownEffect(RawConfig)

const validAttachments = (config: NetworkConfig): ReadonlyArray<Attachment> | undefined => {
  const list = config["cni.dev/valid-attachments"] ?? config["cni.dev/attachments"]
  return list?.map((a) => ({ containerId: a.containerID, ifname: a.ifname }))
}

const errorJson = (cniVersion: string, e: PluginError): SkelOutput => ({
  stdout: JSON.stringify({
    cniVersion,
    code: e.cniCode,
    msg: e.message,
    ...(e.details === undefined ? {} : { details: e.details })
  }) + "\n",
  exitCode: 1
})

type Parsed = { readonly json: unknown } | { readonly error: DecodeFailure }

const parseJson = (stdin: string): Parsed => {
  try {
    return { json: JSON.parse(stdin) }
  } catch (e) {
    return {
      error: new DecodeFailure({
        message: `the network configuration on stdin is not valid JSON: ${e instanceof Error ? e.message : String(e)}`
      })
    }
  }
}

/** The `cniVersion` of a config, read leniently (VERSION may come with an empty or partial stdin). */
const versionIn = (parsed: Parsed): string | undefined =>
  "json" in parsed && Predicate.hasProperty(parsed.json, "cniVersion") && Predicate.isString(parsed.json.cniVersion)
    ? parsed.json.cniVersion
    : undefined

const isPluginError = (u: unknown): u is PluginError =>
  Predicate.hasProperty(u, "cniCode") && Predicate.isNumber(u.cniCode) && Predicate.hasProperty(u, "message") &&
  Predicate.isString(u.message)

export const runSkel = <R>(plugin: Plugin<R>, input: SkelInput): Effect.Effect<SkelOutput, never, R> => {
  // Errors echo the request's version whenever it can be read, even before the rest is checked.
  const parsed = parseJson(input.stdin)
  const claimed = versionIn(parsed)
  const cniVersion = claimed ?? LATEST
  const program = Effect.gen(function*() {
    const env = input.env
    const command = present(env.CNI_COMMAND)
    if (command === undefined) {
      return yield* new InvalidEnvironment({ message: `CNI_COMMAND is not set: this program is a CNI plugin, run by a container runtime` })
    }
    if (!commands.includes(command as Command)) {
      return yield* new InvalidEnvironment({ message: `unknown CNI_COMMAND: ${command} (expected one of ${commands.join(", ")})` })
    }
    const cmd = command as Command
    if (cmd === "VERSION") {
      return { stdout: JSON.stringify({ cniVersion, supportedVersions }) + "\n", exitCode: 0 }
    }
    if ("error" in parsed) return yield* parsed.error
    const json = parsed.json
    const raw = yield* decodeRaw(json).pipe(
      Effect.mapError(() => new DecodeFailure({ message: `the network configuration on stdin must be a JSON object` }))
    )

    const missing = [
      ["CNI_CONTAINERID", cmd === "ADD" || cmd === "DEL" || cmd === "CHECK"],
      ["CNI_IFNAME", cmd === "ADD" || cmd === "DEL" || cmd === "CHECK"],
      ["CNI_NETNS", cmd === "ADD" || cmd === "CHECK"]
    ].filter(([name, needed]) => needed && present(env[name as string]) === undefined).map(([name]) => name)
    if (missing.length > 0) {
      return yield* new InvalidEnvironment({ message: `required environment variables missing: ${missing.join(", ")}` })
    }
    const attachment: Attachment = { containerId: present(env.CNI_CONTAINERID) ?? "", ifname: present(env.CNI_IFNAME) ?? "" }
    if (cmd === "ADD" || cmd === "DEL" || cmd === "CHECK") {
      const invalid = validateAttachment(attachment)
      if (invalid !== undefined) return yield* invalid
    }

    if (claimed === undefined || !isSupported(claimed)) {
      return yield* new IncompatibleVersion({
        message: "incompatible CNI versions",
        details: `config is ${JSON.stringify(raw.cniVersion ?? "")}, plugin supports ${JSON.stringify(supportedVersions)}`
      })
    }
    if (compareVersions(cniVersion, commandSince[cmd]) < 0) {
      return yield* new IncompatibleVersion({
        message: "incompatible CNI versions",
        details: `${cmd} needs cniVersion ${commandSince[cmd]} or later; config is "${cniVersion}"`
      })
    }
    const config = yield* decodeNetworkConfig(json)
    const badName = validateNetworkName(config.name)
    if (badName !== undefined) return yield* badName
    const base = {
      cniVersion,
      path: (present(env.CNI_PATH) ?? "").split(":").filter((p) => p !== ""),
      config,
      raw,
      stdin: input.stdin,
      env
    }
    const empty = { stdout: "", exitCode: 0 }
    switch (cmd) {
      case "ADD":
      case "DEL":
      case "CHECK": {
        const request: CniRequest = {
          ...base,
          ...attachment,
          netns: present(env.CNI_NETNS),
          args: yield* parseCniArgs(env.CNI_ARGS)
        }
        if (cmd === "ADD") {
          const result = yield* plugin.add(request)
          return { stdout: JSON.stringify(encodeResult(result, cniVersion)) + "\n", exitCode: 0 }
        }
        yield* (cmd === "DEL" ? plugin.del(request) : plugin.check(request))
        return empty
      }
      case "GC":
        yield* plugin.gc({ ...base, valid: validAttachments(config) })
        return empty
      case "STATUS":
        yield* plugin.status(base)
        return empty
    }
  })
  return program.pipe(
    Effect.catchCause((cause) => {
      const failure = Cause.findErrorOption(cause)
      if (failure._tag === "Some" && isPluginError(failure.value)) return Effect.succeed(errorJson(cniVersion, failure.value))
      return Effect.succeed(errorJson(cniVersion, {
        cniCode: CniCode.Internal,
        message: "internal error in the plugin; please report it with the details",
        details: Cause.pretty(cause).slice(0, 2000)
      }))
    })
  )
}

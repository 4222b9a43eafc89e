import {
  CniCode,
  defaultIpamOptions,
  EVENT_MODE,
  EVENT_PLUGIN,
  type EventMode,
  type EventPlugin,
  Ipam,
  packageVersion,
  type PluginEvent,
  recordEvent,
  stateDirOf
} from "@containerscale/core"
import { Effect, type Layer, Option } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { type Plugin, runSkel } from "./skel.ts"

const readStdin = (): string => {
  try {
    return fs.readFileSync(0, "utf8")
  } catch {
    return ""
  }
}

export interface BinaryOptions {
  /**
   * the binary's name in the event journal (lowercase letters, digits, `.`, `_`, `-`); default
   * "containerscale". A plugin of your own gives its own, so the agent counts its calls apart.
   */
  readonly name?: EventPlugin
  /** the mode a call runs in, from the raw config; default: the config's `mode` when it names one, else "plugin" */
  readonly mode?: (config: Readonly<Record<string, unknown>> | undefined) => EventMode
}

/** What one call did, gathered while it runs, for its line in the event journal. */
interface Tally {
  allocated: number
  released: number
  dataDir: string | undefined
  error: string | undefined
  /** the config as the skel decoded it, when the call got as far as the plugin */
  config: Readonly<Record<string, unknown>> | undefined
}

const COMMANDS = new Set(["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"])
const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,252}$/
const TAG = /^[A-Za-z][A-Za-z0-9]{0,63}$/
const codeNames = new Map<number, string>(Object.entries(CniCode).map(([name, code]) => [code, name]))

const defaultMode = (config: Readonly<Record<string, unknown>> | undefined): EventMode => {
  const mode = config?.["mode"]
  return typeof mode === "string" && EVENT_MODE.test(mode) ? mode : "plugin"
}

const parseObject = (text: string): Record<string, unknown> | undefined => {
  // a thrown SyntaxError costs a Bun binary ~0.3 ms: VERSION comes with an empty stdin
  if (!text.trimStart().startsWith("{")) return undefined
  try {
    const json: unknown = JSON.parse(text)
    return typeof json === "object" && json !== null && !Array.isArray(json) ? json as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}

/** Notes the tag of the error a plugin fails with (errors the skel raises itself are named by code). */
const observePlugin = <R>(plugin: Plugin<R>, tally: Tally): Plugin<R> => {
  const note = (e: unknown) =>
    Effect.sync(() => {
      const tag = (e as { _tag?: unknown } | undefined)?._tag
      if (typeof tag === "string" && TAG.test(tag)) tally.error = tag
    })
  const seen = <A extends { readonly raw: Readonly<Record<string, unknown>> }>(r: A) => {
    tally.config = r.raw
    return r
  }
  return {
    add: (r) => Effect.tapError(plugin.add(seen(r)), note),
    del: (r) => Effect.tapError(plugin.del(seen(r)), note),
    check: (r) => Effect.tapError(plugin.check(seen(r)), note),
    gc: (r) => Effect.tapError(plugin.gc(seen(r)), note),
    status: (r) => Effect.tapError(plugin.status(seen(r)), note)
  }
}

/**
 * Counts the addresses the call hands out and frees. `allocate` returns what the attachment
 * already holds too, so what it held before is asked first (the store is cached in-process by
 * then, so that costs a lock and an fstat).
 */
const observeIpam = (ipam: Ipam["Service"], tally: Tally): Ipam["Service"] => {
  const note = (dataDir: string | undefined) => {
    tally.dataDir = path.resolve(dataDir ?? defaultIpamOptions.dataDir)
  }
  return {
    ...ipam,
    allocate: (request) =>
      Effect.gen(function*() {
        note(request.dataDir)
        const before = yield* ipam.leases(request).pipe(
          Effect.map((leases) => new Set(leases.map((l) => l.ip))),
          Effect.orElseSucceed(() => new Set<string>())
        )
        const leases = yield* ipam.allocate(request)
        tally.allocated += leases.filter((l) => !before.has(l.ip)).length
        return leases
      }),
    release: (request) =>
      Effect.map(Effect.suspend(() => (note(request.dataDir), ipam.release(request))), (ips) => {
        tally.released += ips.length
        return ips
      }),
    gc: (request) =>
      Effect.map(Effect.suspend(() => (note(request.dataDir), ipam.gc(request))), (released) => {
        tally.released += released.length
        return released
      }),
    leases: (request) => Effect.suspend(() => (note(request.dataDir), ipam.leases(request)))
  }
}

/** The event of a finished call. */
const eventOf = (
  options: BinaryOptions,
  env: Readonly<Record<string, string | undefined>>,
  config: Readonly<Record<string, unknown>> | undefined,
  output: { readonly stdout: string; readonly exitCode: number },
  tally: Tally
): PluginEvent => {
  const command = env.CNI_COMMAND
  const network = config?.["name"]
  const ok = output.exitCode === 0
  const code = ok ? undefined : parseObject(output.stdout)?.["code"]
  const cniCode = typeof code === "number" && Number.isInteger(code) ? code : undefined
  return {
    t: Date.now(),
    plugin: options.name ?? "containerscale",
    command: command !== undefined && COMMANDS.has(command) ? command as PluginEvent["command"] : "unknown",
    mode: (options.mode ?? defaultMode)(config),
    network: typeof network === "string" && NAME.test(network) ? network : undefined,
    result: ok ? "ok" : "error",
    code: cniCode,
    error: ok ? undefined : tally.error ?? (cniCode === undefined ? undefined : codeNames.get(cniCode)),
    ms: Math.round(performance.now() * 10) / 10,
    dataDir: tally.dataDir,
    allocated: tally.allocated > 0 ? tally.allocated : undefined,
    released: tally.released > 0 ? tally.released : undefined
  }
}

/**
 * The whole life of a CNI plugin process: read the environment and stdin, run the plugin with
 * `layer`, write the answer, note the call in the node's event journal (when an agent keeps one),
 * exit. Leaving right after the answer skips the runtime's teardown.
 */
export const runCniBinary = <R>(plugin: Plugin<R>, layer: Layer.Layer<R>, options: BinaryOptions = {}): void => {
  if (options.name !== undefined && !EVENT_PLUGIN.test(options.name)) {
    throw new Error(`runCniBinary: the name "${options.name}" must be lowercase letters, digits, ".", "_" and "-" (at most 64)`)
  }
  const env = process.env
  if (process.argv[2] === "--version" && env.CNI_COMMAND === undefined) {
    fs.writeSync(1, `${options.name ?? "containerscale"} ${packageVersion(import.meta.url)}\n`)
    process.exit(0)
  }
  const stdin = readStdin()
  const tally: Tally = { allocated: 0, released: 0, dataDir: undefined, error: undefined, config: undefined }
  const observed = observePlugin(plugin, tally)
  const input = { env, stdin }
  const program = Effect.flatMap(Effect.serviceOption(Ipam), (ipam) =>
    Option.isSome(ipam)
      ? runSkel(observed, input).pipe(Effect.provideService(Ipam, observeIpam(ipam.value, tally)))
      : runSkel(observed, input)) as Effect.Effect<{ stdout: string; exitCode: number }, never, R>
  void Effect.runPromise(program.pipe(Effect.provide(layer))).then(
    (output) => {
      fs.writeSync(1, output.stdout)
      try {
        const config = tally.config ?? parseObject(stdin)
        recordEvent(stateDirOf(config, env), eventOf(options, env, config, output, tally))
      } catch {
        // the journal is best effort: the answer is written, the call is done
      }
      process.exit(output.exitCode)
    }
  )
}

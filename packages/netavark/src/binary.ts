import { type Netlink, packageVersion } from "@containerscale/core"
import { type Member } from "@containerscale/core/member"
import { Cause, Effect, Exit, type Layer } from "effect"
import * as fs from "node:fs"
import { create, info, type Io, setup, teardown } from "./plugin.ts"
import { Call, decodeInput, InvalidRequest, Network } from "./protocol.ts"

/**
 * One netavark plugin call: `info`, `create`, `setup <netns>` or `teardown <netns>`, JSON on stdin,
 * one JSON document on stdout (`{"error": ...}` and exit 1 on failure), logs on stderr.
 */

const USAGE = "usage: containerscale-netavark info | create | setup <netns-path> | teardown <netns-path> | --version"

const readStdin = (): string => {
  try {
    return fs.readFileSync(0, "utf8")
  } catch {
    return ""
  }
}

/** Netavark's error format: a tagged error's message as it is; anything else is a bug of ours. */
export const errorOf = (cause: Cause.Cause<unknown>): { readonly error: string } => {
  const failure = cause.reasons.find(Cause.isFailReason)
  if (failure !== undefined && typeof (failure.error as { _tag?: unknown })._tag === "string") {
    return { error: (failure.error as { message: string }).message }
  }
  const e = Cause.squash(cause) as { message?: unknown } | undefined
  return { error: `internal error: ${typeof e?.message === "string" ? e.message : String(e)}` }
}

/** Runs one call and gives back what to print and the exit code. */
export const runCall = (
  argv: ReadonlyArray<string>,
  stdin: () => string,
  io: Io
): Effect.Effect<{ readonly stdout: string; readonly exitCode: number }, never, Netlink | Member> => {
  const [command, netns, ...rest] = argv
  const refuse = (message: string) => Effect.fail(new InvalidRequest({ message }))
  const program: Effect.Effect<unknown, unknown, Netlink | Member> = Effect.gen(function*() {
    switch (command) {
      case undefined:
      case "info":
        return info()
      case "--version":
        return `containerscale-netavark ${packageVersion(import.meta.url)}`
      case "create": {
        const { value, json } = yield* decodeInput(Network, stdin(), "create")
        return yield* create(value, json, io)
      }
      case "setup":
      case "teardown": {
        if (netns === undefined || netns === "") return yield* refuse(`${command} needs the container's network namespace path: ${USAGE}`)
        if (rest.length > 0) return yield* refuse(`${command} takes one argument, the network namespace path: ${USAGE}`)
        const { value } = yield* decodeInput(Call, stdin(), command)
        return command === "setup" ? yield* setup(value, netns, io) : yield* Effect.as(teardown(value, netns, io), undefined)
      }
      default:
        return yield* refuse(`unknown command "${command}": ${USAGE}`)
    }
  })
  return Effect.exit(program).pipe(Effect.map((exit) =>
    Exit.isSuccess(exit)
      ? { stdout: exit.value === undefined ? "" : `${typeof exit.value === "string" ? exit.value : JSON.stringify(exit.value)}\n`, exitCode: 0 }
      : { stdout: `${JSON.stringify(errorOf(exit.cause))}\n`, exitCode: 1 }
  ))
}

/** The whole life of a plugin process. Leaving right after the answer skips the runtime's teardown. */
export const runNetavarkPlugin = (argv: ReadonlyArray<string>, layer: Layer.Layer<Netlink | Member>): void => {
  const io: Io = {
    env: process.env,
    warn: (message) => {
      try {
        fs.writeSync(2, `containerscale-netavark: warning: ${message}\n`)
      } catch {
        // stderr closed: nothing to do
      }
    }
  }
  void Effect.runPromise(runCall(argv, readStdin, io).pipe(Effect.provide(layer))).then((output) => {
    if (output.stdout !== "") fs.writeSync(1, output.stdout)
    process.exit(output.exitCode)
  })
}

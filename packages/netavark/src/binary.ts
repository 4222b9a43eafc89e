import type { Netlink } from "@containerscale/core"
import { Cause, Effect, Exit, type Layer } from "effect"
import * as fs from "node:fs"
import { PluginError } from "./options.ts"
import { create, info, type Io, parseCall, parseInput, setup, teardown } from "./plugin.ts"

/**
 * One netavark plugin call: `info`, `create`, `setup <netns>` or `teardown <netns>`, JSON on stdin,
 * one JSON document on stdout (`{"error": ...}` and exit 1 on failure), logs on stderr.
 */

const USAGE = "usage: containerscale-netavark info | create | setup <netns-path> | teardown <netns-path>"

const readStdin = (): string => {
  try {
    return fs.readFileSync(0, "utf8")
  } catch {
    return ""
  }
}

const messageOf = (cause: Cause.Cause<unknown>): string => {
  const e = Cause.squash(cause) as { message?: unknown } | undefined
  if (e instanceof PluginError) return e.message
  const message = typeof e?.message === "string" ? e.message : String(e)
  return e instanceof Error && !("_tag" in e) ? `internal error: ${message}` : message
}

/** Runs one call and gives back what to print and the exit code. */
export const runCall = (
  argv: ReadonlyArray<string>,
  stdin: () => string,
  io: Io
): Effect.Effect<{ readonly stdout: string; readonly exitCode: number }, never, Netlink> => {
  const program: Effect.Effect<unknown, unknown, Netlink> = Effect.suspend((): Effect.Effect<unknown, unknown, Netlink> => {
    const [command, netns, ...rest] = argv
    switch (command) {
      case undefined:
      case "info":
        return Effect.succeed(info())
      case "create":
        return Effect.succeed(create(parseInput(stdin(), "create"), io))
      case "setup":
      case "teardown": {
        if (netns === undefined || netns === "") throw new PluginError(`${command} needs the container's network namespace path: ${USAGE}`)
        if (rest.length > 0) throw new PluginError(`${command} takes one argument, the network namespace path: ${USAGE}`)
        const call = parseCall(parseInput(stdin(), command), netns, command)
        return command === "setup" ? setup(call, io) : Effect.as(teardown(call, io), undefined)
      }
      default:
        throw new PluginError(`unknown command "${command}": ${USAGE}`)
    }
  })
  return Effect.exit(program).pipe(Effect.map((exit) =>
    Exit.isSuccess(exit)
      ? { stdout: exit.value === undefined ? "" : `${JSON.stringify(exit.value)}\n`, exitCode: 0 }
      : { stdout: `${JSON.stringify({ error: messageOf(exit.cause) })}\n`, exitCode: 1 }
  ))
}

/** The whole life of a plugin process. Leaving right after the answer skips the runtime's teardown. */
export const runNetavarkPlugin = (argv: ReadonlyArray<string>, layer: Layer.Layer<Netlink>): void => {
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

import { Cause, Data, Effect, Exit, type Runtime } from "effect"
import * as fs from "node:fs"

/**
 * `@containerscale/core/main`: what the long-running binaries (the agent, the Docker driver) share
 * at their `main`: long `--name value` / `--name=value` flags, and how they end under
 * `NodeRuntime.runMain` (exit codes: 0 done or stopped by a signal, 1 a failure, 2 a usage or
 * config error). Hand-rolled rather than `effect/cli`: that one costs ~10 ms of start-up and would
 * change the usage texts and messages. A separate entry point: the plugins never load it.
 */

/** Ends the program: `message` (when not empty) on stderr, then exit `code`. */
export class Stop extends Data.TaggedError("Stop")<{ readonly code: 1 | 2; readonly message: string }> {}

/** The flags by key, or "help" for `--help` / `-h`; fails with the usage (exit 2) for an unknown flag or a missing value. */
export const parseLongFlags = <K extends string>(
  argv: ReadonlyArray<string>,
  names: Readonly<Record<string, K>>,
  usage: string
): Effect.Effect<Partial<Record<K, string>> | "help" | "version", Stop> =>
  Effect.suspend((): Effect.Effect<Partial<Record<K, string>> | "help" | "version", Stop> => {
    const flags: Partial<Record<K, string>> = {}
    const refuse = (problem: string) => Effect.fail(new Stop({ code: 2, message: `${problem}\n\n${usage}` }))
    for (let i = 0; i < argv.length; i++) {
      const [name, inline] = argv[i]!.split(/=(.*)/s, 2) as [string, string | undefined]
      if (name === "--help" || name === "-h") return Effect.succeed("help" as const)
      if (name === "--version") return Effect.succeed("version" as const)
      const key = names[name]
      if (key === undefined) return refuse(`unknown argument ${name}`)
      const value = inline ?? argv[++i]
      if (value === undefined || value === "") return refuse(`${name} needs a value`)
      flags[key] = value
    }
    return Effect.succeed(flags)
  })

const writeStderr = (text: string) => {
  try {
    fs.writeSync(2, text.endsWith("\n") ? text : `${text}\n`)
  } catch {
    // nowhere left to say it
  }
}

/**
 * Prints why `program` failed (a `Stop`'s message as is, anything else as `<name>: <cause>`);
 * interruption (SIGTERM, SIGINT) is a clean stop and prints nothing.
 */
export const reportFailure = (name: string) => <A, E, R>(program: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.tapCause(program, (cause) =>
    Effect.sync(() => {
      if (Cause.hasInterruptsOnly(cause)) return
      const error = Cause.squash(cause)
      if (error instanceof Stop) {
        if (error.message !== "") writeStderr(error.message)
      } else {
        writeStderr(`${name}: ${error instanceof Error && Cause.hasFails(cause) ? error.message : Cause.pretty(cause)}`)
      }
    }))

/** The exit code: 0 when done or interrupted by a signal, a `Stop`'s code, else 1. */
export const teardown: Runtime.Teardown = (exit, onExit) => {
  if (Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause)) return onExit(0)
  const error = Cause.squash(exit.cause)
  onExit(error instanceof Stop ? error.code : 1)
}

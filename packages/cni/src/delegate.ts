import { runProcess } from "@containerscale/core/internal"
import { Data, Effect, Predicate } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import type { Command } from "./version.ts"

/** An error a delegated plugin reported (its own code and message), or a failure to run it. */
export class DelegateFailed extends Data.TaggedError("DelegateFailed")<{
  readonly cniCode: number
  readonly message: string
  readonly details?: string | undefined
}> {}

/** The first executable named `type` in the CNI_PATH directories. */
export const findPlugin = (type: string, dirs: ReadonlyArray<string>): string | undefined =>
  type.includes("/") ? undefined : dirs.map((d) => path.join(d, type)).find((file) => {
    try {
      fs.accessSync(file, fs.constants.X_OK)
      return fs.statSync(file).isFile()
    } catch {
      return false
    }
  })

export interface DelegateRequest {
  readonly env: Readonly<Record<string, string | undefined>>
  readonly stdin: string
  readonly path: ReadonlyArray<string>
}

/**
 * Runs the plugin named `type` (an IPAM plugin) as CNI's delegation contract says: the same
 * environment with `CNI_COMMAND` changed, the whole config on stdin, its stderr passed on to ours.
 * Answers its parsed stdout (undefined when empty); its error JSON becomes a DelegateFailed.
 */
export const execDelegate = (type: string, command: Command, request: DelegateRequest) =>
  Effect.gen(function*() {
    const file = findPlugin(type, request.path)
    if (file === undefined) {
      return yield* new DelegateFailed({
        cniCode: 7,
        message: `ipam plugin "${type}" was not found in CNI_PATH (${request.path.join(":") || "empty"}): install it or fix ipam.type`
      })
    }
    const done = yield* Effect.promise(() =>
      runProcess(file, [], { env: { ...request.env, CNI_COMMAND: command }, stdin: request.stdin, inheritStderr: true })
    )
    if (done._tag === "NotStarted") return yield* new DelegateFailed({ cniCode: 100, message: `cannot run ${file}: ${done.reason}` })
    let json: unknown
    try {
      json = done.stdout.trim() === "" ? undefined : JSON.parse(done.stdout)
    } catch {
      json = undefined
    }
    if (done.code === 0) return json
    const reported = Predicate.hasProperty(json, "code") && Predicate.isNumber(json.code) ? json : undefined
    return yield* new DelegateFailed({
      cniCode: reported?.code as number ?? 100,
      message: `ipam plugin "${type}" failed on ${command}: ${
        reported !== undefined && Predicate.hasProperty(reported, "msg") ? String(reported.msg) : done.stdout.trim() || `exit ${done.code}`
      }`,
      details: reported !== undefined && Predicate.hasProperty(reported, "details") ? String(reported.details) : undefined
    })
  })

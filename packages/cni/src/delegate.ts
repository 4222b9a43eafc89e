import { Data, Effect, Predicate } from "effect"
import { spawn } from "node:child_process"
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
  Effect.callback<unknown, DelegateFailed>((resume) => {
    const file = findPlugin(type, request.path)
    if (file === undefined) {
      resume(Effect.fail(new DelegateFailed({
        cniCode: 7,
        message: `ipam plugin "${type}" was not found in CNI_PATH (${request.path.join(":") || "empty"}): install it or fix ipam.type`
      })))
      return
    }
    const child = spawn(file, [], { env: { ...request.env, CNI_COMMAND: command }, stdio: ["pipe", "pipe", "inherit"] })
    let stdout = ""
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d))
    child.on("error", (e) => resume(Effect.fail(new DelegateFailed({ cniCode: 100, message: `cannot run ${file}: ${e.message}` }))))
    child.on("close", (code) => {
      let json: unknown
      try {
        json = stdout.trim() === "" ? undefined : JSON.parse(stdout)
      } catch {
        json = undefined
      }
      if (code === 0) return resume(Effect.succeed(json))
      const reported = Predicate.hasProperty(json, "code") && Predicate.isNumber(json.code) ? json : undefined
      resume(Effect.fail(new DelegateFailed({
        cniCode: reported?.code as number ?? 100,
        message: `ipam plugin "${type}" failed on ${command}: ${
          reported !== undefined && Predicate.hasProperty(reported, "msg") ? String(reported.msg) : stdout.trim() || `exit ${code}`
        }`,
        details: reported !== undefined && Predicate.hasProperty(reported, "details") ? String(reported.details) : undefined
      })))
    })
    child.stdin.on("error", () => {})
    child.stdin.end(request.stdin)
  })

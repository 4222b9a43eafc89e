#!/usr/bin/env node
// containerscalectl: status, doctor, install, uninstall and gc for containerscale on one node.
// Exit codes: 0 done, 1 failed (or a doctor check failed), 2 usage error.
// No top-level await: the compiled binary may be bundled as CommonJS.
import { Ipam, layerIproute2 } from "@containerscale/core"
import * as Log from "@containerscale/core/log"
import { LocalApi } from "@containerscale/core/member"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { Cause, Effect, Exit, Layer } from "effect"
import { CliError, Command } from "effect/cli"
import { containerscalectl, VERSION } from "./commands.ts"
import { CtlError } from "./errors.ts"

/**
 * What the commands need, built once: the platform, netlink (iproute2), the IPAM, tailscaled's
 * LocalAPI, and log lines as JSON on stderr (info and up; `--log-level debug` shows what was read).
 */
const services = Layer.mergeAll(NodeServices.layer, layerIproute2, Ipam.layer(), LocalApi.layer, Layer.orDie(Log.layer()))

/** Runs the CLI on `argv` and resolves to its exit code; messages go to stdout and stderr. */
export const runCtl = (argv: ReadonlyArray<string>): Promise<number> =>
  Effect.runPromiseExit(
    Command.runWith(containerscalectl, { version: VERSION })(argv).pipe(Effect.provide(services))
  ).then((exit) => {
    if (Exit.isSuccess(exit)) return 0
    const error = Cause.findErrorOption(exit.cause)
    if (error._tag === "Some") {
      const e = error.value
      if (e instanceof CtlError) {
        if (e.message !== "") process.stderr.write(`containerscalectl: ${e.message}\n`)
        return e.exitCode
      }
      // usage errors: the help and the error were already printed
      if (CliError.isCliError(e)) return 2
    }
    process.stderr.write(`containerscalectl: ${Cause.pretty(exit.cause)}\n`)
    return 1
  })

runCtl(process.argv.slice(2)).then((code) => {
  process.exitCode = code
})

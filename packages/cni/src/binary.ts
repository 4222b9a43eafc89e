import { Effect, type Layer } from "effect"
import * as fs from "node:fs"
import { type Plugin, runSkel } from "./skel.ts"

const readStdin = (): string => {
  try {
    return fs.readFileSync(0, "utf8")
  } catch {
    return ""
  }
}

/**
 * The whole life of a CNI plugin process: read the environment and stdin, run the plugin with
 * `layer`, write the answer, exit. Leaving right after the answer skips the runtime's teardown.
 */
export const runCniBinary = <R>(plugin: Plugin<R>, layer: Layer.Layer<R>): void => {
  void Effect.runPromise(runSkel(plugin, { env: process.env, stdin: readStdin() }).pipe(Effect.provide(layer))).then(
    (output) => {
      fs.writeSync(1, output.stdout)
      process.exit(output.exitCode)
    }
  )
}

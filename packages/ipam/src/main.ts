#!/usr/bin/env node
import { runSkel } from "@containerscale/cni"
import { Ipam } from "@containerscale/core"
import { Effect } from "effect"
import * as fs from "node:fs"
import { ipamPlugin } from "./plugin.ts"

const readStdin = (): string => {
  try {
    return fs.readFileSync(0, "utf8")
  } catch {
    return ""
  }
}

void Effect.runPromise(
  runSkel(ipamPlugin, { env: process.env, stdin: readStdin() }).pipe(Effect.provideService(Ipam, Ipam.make()))
).then((output) => {
  fs.writeSync(1, output.stdout)
  // Nothing is left to do: leaving now skips the runtime's teardown, a few ms of every call.
  process.exit(output.exitCode)
})

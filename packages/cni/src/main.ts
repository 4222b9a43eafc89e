#!/usr/bin/env node
import { Ipam, layerIproute2 } from "@containerscale/core"
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import { containerscalePlugin } from "./plugin.ts"
import { runSkel } from "./skel.ts"

const readStdin = (): string => {
  try {
    return fs.readFileSync(0, "utf8")
  } catch {
    return ""
  }
}

void Effect.runPromise(
  runSkel(containerscalePlugin, { env: process.env, stdin: readStdin() }).pipe(
    Effect.provide(Layer.mergeAll(layerIproute2, Ipam.layer()))
  )
).then((output) => {
  fs.writeSync(1, output.stdout)
  process.exit(output.exitCode)
})

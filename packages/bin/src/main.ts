#!/usr/bin/env node
/**
 * containerscale, the multicall executable: one compiled binary (one embedded runtime) for every
 * program of the project, chosen by the name it runs under, as BusyBox does. The build links the
 * other names to it (`containerscale --list` prints them); `containerscale <name> [args]` runs a
 * program under any name too.
 */
import * as path from "node:path"

const programs = new Map<string, () => Promise<unknown>>([
  ["containerscale", () => import("../../cni/src/main.ts")],
  ["containerscale-ipam", () => import("../../ipam/src/main.ts")],
  ["containerscale-netavark", () => import("../../netavark/src/main.ts")],
  ["containerscale-docker", () => import("../../docker/src/main.ts")],
  ["containerscale-agent", () => import("../../agent/src/main.ts")],
  ["containerscalectl", () => import("../../agent/src/cli/main.ts")]
])

const calledAs = path.basename(process.argv0)

/**
 * The program to run: `containerscale <name> [args]` (the CNI plugin itself takes no arguments),
 * else the name this binary was started under.
 */
const chosen = (): (() => Promise<unknown>) | undefined => {
  const named = programs.get(process.argv[2] ?? "")
  if (named !== undefined && (calledAs === "containerscale" || !programs.has(calledAs))) {
    process.argv.splice(2, 1)
    return named
  }
  return programs.get(calledAs)
}

const program = chosen()
if (process.argv[2] === "--list" && calledAs === "containerscale") {
  process.stdout.write([...programs.keys()].map((name) => `${name}\n`).join(""))
} else if (program === undefined) {
  process.stderr.write(
    `containerscale: started as "${calledAs}", which names no program of this binary.\n` +
      `Link it under one of these names (npm run install-cni does for the CNI plugins), or run "containerscale <name> [args]":\n` +
      [...programs.keys()].map((name) => `  ${name}\n`).join("")
  )
  process.exitCode = 2
} else {
  program().catch((e: unknown) => {
    process.stderr.write(`containerscale: ${e instanceof Error ? e.stack : String(e)}\n`)
    process.exitCode = 1
  })
}

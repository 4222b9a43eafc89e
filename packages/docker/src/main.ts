#!/usr/bin/env node
import { DEFAULT_STATE_DIR, readLongFlags, STATE_DIR_ENV } from "@containerscale/core"
import { Effect, Exit, Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { stderrLogger } from "./log.ts"
import { serveDriver } from "./server.ts"

const USAGE = `containerscale-docker: Docker network driver and IPAM driver that put containers on a tailnet

Usage: containerscale-docker [--name NAME] [--socket PATH] [--state-dir DIR] [--group GID]

  --name NAME        the plugin name, as in "docker network create -d NAME" (default containerscale)
  --socket PATH      where to listen (default /run/docker/plugins/NAME.sock); elsewhere, the driver
                     writes /etc/docker/plugins/NAME.spec pointing at it and removes it on exit
  --state-dir DIR    the node's state directory (${STATE_DIR_ENV}; default ${DEFAULT_STATE_DIR});
                     the driver keeps its networks, endpoints and pools in DIR/docker
  --group GID        make the socket 0660 and owned by this group (default: 0600, root only)
  --help             this text

Start it before dockerd (systemd: Before=docker.service). SIGTERM or SIGINT stop it; running
containers keep their network and tailnet connection.
`

const PLUGIN_DIR = "/run/docker/plugins"
const SPEC_DIR = "/etc/docker/plugins"

const flags = {
  name: "containerscale",
  ...readLongFlags(
    process.argv.slice(2),
    { "--name": "name", "--socket": "socket", "--state-dir": "stateDir", "--group": "group" },
    USAGE
  )
}
const die = (message: string): never => {
  process.stderr.write(`containerscale-docker: ${message}\n`)
  process.exit(2)
}
if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(flags.name)) die(`--name must hold letters, digits, "_", "." and "-" only`)
if (["bridge", "host", "null", "overlay", "macvlan", "ipvlan", "default", "none"].includes(flags.name)) {
  die(`--name ${flags.name} is a builtin driver's name, which dockerd will not hand to a plugin`)
}
const group = flags.group === undefined ? undefined : Number(flags.group)
if (group !== undefined && (!Number.isInteger(group) || group < 0)) die(`--group takes a numeric group id, not "${flags.group}"`)
const stateDir = path.resolve(flags.stateDir ?? process.env[STATE_DIR_ENV] ?? DEFAULT_STATE_DIR)
const defaultSocket = path.join(PLUGIN_DIR, `${flags.name}.sock`)
const socket = path.resolve(flags.socket ?? defaultSocket)
const spec = socket === defaultSocket ? undefined : path.join(SPEC_DIR, `${flags.name}.spec`)
const log = stderrLogger()

const scope = Effect.runSync(Scope.make())
const started = await Effect.runPromiseExit(Scope.provide(serveDriver({ socket, stateDir, log, group }), scope))
if (Exit.isFailure(started)) {
  const reason = started.cause.reasons[0]
  die(reason?._tag === "Fail" ? reason.error.message : String(started.cause))
}
if (spec !== undefined) {
  fs.mkdirSync(SPEC_DIR, { recursive: true, mode: 0o755 })
  fs.writeFileSync(`${spec}.tmp`, `unix://${socket}\n`, { mode: 0o644 })
  fs.renameSync(`${spec}.tmp`, spec)
}
log.info("serving NetworkDriver and IpamDriver", { name: flags.name, socket, ...(spec === undefined ? {} : { spec }), stateDir })

let stopping = false
const stop = (signal: string) => {
  if (stopping) return
  stopping = true
  log.info(`${signal}: stopping; containers keep their network`)
  if (spec !== undefined) fs.rmSync(spec, { force: true })
  void Effect.runPromise(Scope.close(scope, Exit.void)).finally(() => {
    fs.rmSync(socket, { force: true })
    process.exit(0)
  })
}
process.on("SIGTERM", () => stop("SIGTERM"))
process.on("SIGINT", () => stop("SIGINT"))

#!/usr/bin/env node
import { DEFAULT_STATE_DIR, Ipam, layerIproute2, packageVersion, STATE_DIR_ENV } from "@containerscale/core"
import { LocalApi, Member } from "@containerscale/core/member"
import * as Log from "@containerscale/core/log"
import { parseLongFlags, reportFailure, Stop, teardown } from "@containerscale/core/internal"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { serveDriver } from "./server.ts"

const USAGE = `containerscale-docker: Docker network driver and IPAM driver that put containers on a tailnet

Usage: containerscale-docker [--name NAME] [--socket PATH] [--state-dir DIR] [--group GID]

  --name NAME        the plugin name, as in "docker network create -d NAME" (default containerscale)
  --socket PATH      where to listen (default /run/docker/plugins/NAME.sock); elsewhere, the driver
                     writes /etc/docker/plugins/NAME.spec pointing at it and removes it on exit
  --state-dir DIR    the node's state directory (${STATE_DIR_ENV}; default ${DEFAULT_STATE_DIR});
                     the driver keeps its networks, endpoints and pools in DIR/docker
  --group GID        make the socket 0660 and owned by this group (default: 0600, root only)
  --version          the version
  --help             this text

Start it before dockerd (systemd: Before=docker.service). SIGTERM or SIGINT stop it; running
containers keep their network and tailnet connection.
`

const PLUGIN_DIR = "/run/docker/plugins"
const SPEC_DIR = "/etc/docker/plugins"
const FLAGS = { "--name": "name", "--socket": "socket", "--state-dir": "stateDir", "--group": "group" } as const

const refused = (message: string) => Effect.fail(new Stop({ code: 2, message: `containerscale-docker: ${message}` }))

/** What the driver needs, built once: the JSON logger, netlink (iproute2), the IPAM and member mode. */
const services = Layer.mergeAll(Log.layer(), Ipam.layer(), Member.layer).pipe(Layer.provideMerge(Layer.merge(layerIproute2, LocalApi.layer)))

const main = Effect.gen(function*() {
  const parsed = yield* parseLongFlags(process.argv.slice(2), FLAGS, USAGE)
  if (parsed === "help") return yield* Effect.sync(() => void process.stdout.write(USAGE))
  if (parsed === "version") return yield* Effect.sync(() => void process.stdout.write(`containerscale-docker ${packageVersion(import.meta.url)}\n`))
  const name = parsed.name ?? "containerscale"
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) return yield* refused(`--name must hold letters, digits, "_", "." and "-" only`)
  if (["bridge", "host", "null", "overlay", "macvlan", "ipvlan", "default", "none"].includes(name)) {
    return yield* refused(`--name ${name} is a builtin driver's name, which dockerd will not hand to a plugin`)
  }
  const group = parsed.group === undefined ? undefined : Number(parsed.group)
  if (group !== undefined && (!Number.isInteger(group) || group < 0)) return yield* refused(`--group takes a numeric group id, not "${parsed.group}"`)
  const stateDir = path.resolve(parsed.stateDir ?? process.env[STATE_DIR_ENV] ?? DEFAULT_STATE_DIR)
  const defaultSocket = path.join(PLUGIN_DIR, `${name}.sock`)
  const socket = path.resolve(parsed.socket ?? defaultSocket)
  const spec = socket === defaultSocket ? undefined : path.join(SPEC_DIR, `${name}.spec`)

  return yield* Effect.gen(function*() {
    // closing the scope (SIGTERM, SIGINT) removes the spec, stops serving and removes the socket
    yield* serveDriver({ socket, stateDir, group }).pipe(Effect.catch((e) => refused(e.message)))
    if (spec !== undefined) {
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          fs.mkdirSync(SPEC_DIR, { recursive: true, mode: 0o755 })
          fs.writeFileSync(`${spec}.tmp`, `unix://${socket}\n`, { mode: 0o644 })
          fs.renameSync(`${spec}.tmp`, spec)
        }),
        () => Effect.sync(() => fs.rmSync(spec, { force: true }))
      )
    }
    yield* Effect.logInfo("serving NetworkDriver and IpamDriver", { name, socket, ...(spec === undefined ? {} : { spec }), stateDir })
    return yield* Effect.never.pipe(Effect.onInterrupt(() => Effect.logInfo("stopping; containers keep their network")))
  }).pipe(Effect.scoped, Effect.provide(services))
})

NodeRuntime.runMain(main.pipe(reportFailure("containerscale-docker")), { disableErrorReporting: true, teardown })

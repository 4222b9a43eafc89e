#!/usr/bin/env node
import { Ipam, layerIproute2, packageVersion } from "@containerscale/core"
import { LocalApi } from "@containerscale/core/member"
import { ControlPlane } from "@containerscale/core/controlplane"
import * as Log from "@containerscale/core/log"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect, Layer } from "effect"
import { type AgentState, healthReport, runAgent, tailnetNodesByState } from "./agent.ts"
import { headscaleApprover } from "./approver.ts"
import { type AgentConfig, loadConfig } from "./config.ts"
import { parseLongFlags, reportFailure, Stop, teardown } from "@containerscale/core/internal"
import { cniConfigPools, eventsReaderScoped, makeMetrics, metricsServerScoped } from "./metrics/index.ts"

const AGENT_VERSION = packageVersion(import.meta.url)

const USAGE = `containerscale-agent: the containerscale node agent (runs in the foreground)

Usage: containerscale-agent [--state-dir DIR] [--metrics-address HOST:PORT] [--config FILE]

  --state-dir DIR            the node's state directory (CONTAINERSCALE_STATE_DIR; default /var/lib/containerscale)
  --metrics-address ADDR     where /metrics and /healthz listen (CONTAINERSCALE_METRICS_ADDRESS; default 127.0.0.1:9450)
  --config FILE              a JSON config file (CONTAINERSCALE_CONFIG); see the agent's README
  --version                  the version
  --help                     this text

SIGTERM or SIGINT stop the agent; tailscaled keeps running, so pods stay on the tailnet.
`

/** Everything the agent's work needs, built once: the JSON logger, netlink (iproute2), the IPAM, tailscaled's LocalAPI. */
const services = (config: AgentConfig) =>
  Layer.mergeAll(Log.layer({ level: config.logLevel, file: config.logFile }), layerIproute2, Ipam.layer(), LocalApi.layer)

/** /metrics and /healthz, the event journal and the agent's loops, until interrupted (SIGTERM, SIGINT). */
const serve = (config: AgentConfig) =>
  Effect.gen(function*() {
    const state: AgentState = { checks: new Map() }
    const metrics = yield* makeMetrics({
      pools: cniConfigPools({ dirs: [config.cniConfDir] }),
      tailnetNodes: () => tailnetNodesByState(config.stateDir)
    })
    const reader = yield* eventsReaderScoped({ stateDir: config.stateDir, metrics })
    const server = yield* metricsServerScoped({
      address: config.metricsAddress,
      registry: metrics.registry,
      beforeScrape: () => reader.poll(),
      health: () => healthReport(state)
    }).pipe(Effect.mapError((e) => new Stop({ code: 1, message: `containerscale-agent: cannot listen on ${config.metricsAddress}: ${e.message}` })))
    yield* Effect.logInfo("serving /metrics and /healthz", { url: server.url })
    const approver = config.headscale === undefined
      ? undefined
      : yield* Effect.provide(headscaleApprover, ControlPlane.layer(config.headscale))
    return yield* runAgent({
      config,
      env: process.env,
      state,
      approver,
      hooks: {
        reconciled: (result) => metrics.reconcile.inc({ result: result === "ok" ? "ok" : "error" }),
        restarted: () => metrics.tailscaledRestarts.inc(),
        succeeded: (loop) => metrics.lastSuccess.set({ loop }, Date.now() / 1000)
      }
    }).pipe(Effect.onInterrupt(() => Effect.logInfo("stopping; tailscaled keeps running")))
  }).pipe(Effect.scoped)

const main = Effect.gen(function*() {
  const flags = yield* parseLongFlags(
    process.argv.slice(2),
    { "--state-dir": "stateDir", "--metrics-address": "metricsAddress", "--config": "config" },
    USAGE
  )
  if (flags === "help") return yield* Effect.sync(() => void process.stdout.write(USAGE))
  if (flags === "version") return yield* Effect.sync(() => void process.stdout.write(`containerscale-agent ${AGENT_VERSION}\n`))
  const config = yield* loadConfig(flags, process.env).pipe(
    Effect.mapError((e) => new Stop({ code: 2, message: `containerscale-agent: ${e.message}` }))
  )
  return yield* serve(config).pipe(Effect.provide(services(config)))
})

NodeRuntime.runMain(main.pipe(reportFailure("containerscale-agent")), { disableErrorReporting: true, teardown })

#!/usr/bin/env node
import { readLongFlags } from "@containerscale/core"
import { Effect, Fiber } from "effect"
import { type AgentState, healthReport, runAgent, tailnetNodesByState } from "./agent.ts"
import { headscaleApprover } from "./approver.ts"
import { loadConfig } from "./config.ts"
import { makeLogger } from "./log.ts"
import { cniConfigPools, makeEventsReader, makeMetrics, startMetricsServer } from "./metrics/index.ts"

const USAGE = `containerscale-agent: the containerscale node agent (runs in the foreground)

Usage: containerscale-agent [--state-dir DIR] [--metrics-address HOST:PORT] [--config FILE]

  --state-dir DIR            the node's state directory (CONTAINERSCALE_STATE_DIR; default /var/lib/containerscale)
  --metrics-address ADDR     where /metrics and /healthz listen (CONTAINERSCALE_METRICS_ADDRESS; default 127.0.0.1:9450)
  --config FILE              a JSON config file (CONTAINERSCALE_CONFIG); see the agent's README
  --help                     this text

SIGTERM or SIGINT stop the agent; tailscaled keeps running, so pods stay on the tailnet.
`

const flags = readLongFlags(
  process.argv.slice(2),
  { "--state-dir": "stateDir", "--metrics-address": "metricsAddress", "--config": "config" },
  USAGE
)

const config = await Effect.runPromise(Effect.result(loadConfig(flags, process.env)))
if (config._tag === "Failure") {
  process.stderr.write(`containerscale-agent: ${config.failure.message}\n`)
  process.exit(2)
}
const cfg = config.success
const log = makeLogger({ level: cfg.logLevel, file: cfg.logFile })
const state: AgentState = { checks: new Map() }
const metrics = makeMetrics({ pools: cniConfigPools({ dirs: [cfg.cniConfDir] }), tailnetNodes: () => tailnetNodesByState(cfg.stateDir) })
const reader = makeEventsReader({ stateDir: cfg.stateDir, metrics })
reader.init()
reader.start()
const server = await startMetricsServer({
  address: cfg.metricsAddress,
  registry: metrics.registry,
  beforeScrape: () => reader.poll(),
  health: () => healthReport(state)
}).catch((e: unknown) => {
  process.stderr.write(`containerscale-agent: cannot listen on ${cfg.metricsAddress}: ${(e as Error).message}\n`)
  process.exit(1)
})
log.info("serving /metrics and /healthz", { url: server.url })
let fiber: Fiber.Fiber<unknown, unknown> | undefined
const stop = (signal: string) => {
  log.info(`${signal}: stopping; tailscaled keeps running`)
  void (fiber === undefined ? Promise.resolve() : Effect.runPromise(Fiber.interrupt(fiber)))
    .then(() => reader.stop())
    .then(() => server.close())
    .finally(() => process.exit(0))
}
process.on("SIGTERM", () => stop("SIGTERM"))
process.on("SIGINT", () => stop("SIGINT"))
fiber = Effect.runFork(runAgent({
  config: cfg,
  env: process.env,
  log,
  state,
  approver: cfg.headscale === undefined ? undefined : headscaleApprover(cfg.headscale),
  hooks: {
    reconciled: (result) => metrics.reconcile.inc({ result: result === "ok" ? "ok" : "error" }),
    restarted: () => metrics.tailscaledRestarts.inc()
  }
}))

import { Ipam, layerIproute2 } from "@containerscale/core"
import { LocalApi } from "@containerscale/core/member"
import { ControlPlane } from "@containerscale/core/controlplane"
import * as Log from "@containerscale/core/log"
import { Effect, Layer, Redacted } from "effect"
import type { AgentServices } from "../src/agent.ts"
import { headscaleApprover } from "../src/approver.ts"
import { makeMetrics, type MetricsOptions } from "../src/metrics/index.ts"

/** The services the agent's main builds (netlink through iproute2, the IPAM on disk, the LocalAPI), for the tests' workflows. */
export const services = Layer.mergeAll(layerIproute2, Ipam.layer(), LocalApi.layer)

/** Runs `effect` with the services, logging into `log`. */
export const runWith = <A, E>(effect: Effect.Effect<A, E, AgentServices>, log: Log.MemoryLog = Log.memory()) =>
  Effect.runPromise(effect.pipe(Effect.provide(Layer.merge(services, log.layer))))

/** Forks `effect` with the services, logging into `log`. */
export const forkWith = <A, E>(effect: Effect.Effect<A, E, AgentServices>, log: Log.MemoryLog) =>
  Effect.runFork(effect.pipe(Effect.provide(Layer.merge(services, log.layer))))

/** The agent's approver on the Headscale at `url` with `apiKey`, as the main builds it from its config. */
export const approverAt = (url: string, apiKey: string) =>
  Effect.runSync(Effect.provide(headscaleApprover, ControlPlane.layer({ url, apiKey: Redacted.make(apiKey) })))

/** The agent's metrics, reading the IPAM stores through the services' Ipam. */
export const metricsOf = (options?: MetricsOptions) => Effect.runSync(Effect.provide(makeMetrics(options), services))

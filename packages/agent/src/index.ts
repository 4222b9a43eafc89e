/**
 * The node agent as a library: run its loops in a program of your own (`runAgent` with a config
 * from `loadConfig` or built by hand), or only its router pass (`reconcileRouter`), and serve its
 * Prometheus metrics (`makeMetrics`, `metricsServerScoped`).
 */
export { type AgentHooks, type AgentServices, type AgentState, healthReport, runAgent } from "./agent.ts"
export { headscaleApprover } from "./approver.ts"
export { type AgentConfig, ConfigFile, DEFAULT_METRICS_ADDRESS, loadConfig } from "./config.ts"
export { AgentFailure } from "./errors.ts"
export * from "./metrics/index.ts"
export { type PeerRoutes, readPeerRoutes } from "./peerRoutes.ts"
export { type Approver, reconcileRouter, type RouterOptions, type RouterReport } from "./router.ts"

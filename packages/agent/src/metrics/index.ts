/**
 * Prometheus metrics of the node agent: makeMetrics (the registry and the counters the agent
 * increments), makeEventsReader (the plugins' event journal into the metrics), cniConfigPools
 * (pools of the networks, for the pool gauges) and startMetricsServer (/metrics and /healthz).
 */
export * from "./pools.ts"
export * from "./reader.ts"
export * from "./registry.ts"
export * from "./server.ts"

/**
 * `@containerscale/core/member`: the LocalAPI client and member mode (one tailscaled per
 * container). A separate entry point, so a program that only needs router mode or the IPAM does
 * not load it (it costs a compiled plugin start-up time).
 */
export * from "./tailscale/LocalApi.ts"
export * from "./tailscale/localApiErrors.ts"
export * from "./tailscale/localApiSchemas.ts"
export * from "./tailscale/Member.ts"
export * from "./tailscale/memberNetwork.ts"
export * from "./tailscale/tailscaled.ts"
export * from "./tailscale/memberSettings.ts"
export * from "./tailscale/nodeDaemon.ts"

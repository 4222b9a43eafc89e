/**
 * `@containerscale/core/controlplane`: the Headscale admin API client (version-aware route
 * approval, nodes, pre-auth keys). A separate entry point, so the plugins do not load it.
 */
export * from "./controlplane/errors.ts"
export * from "./controlplane/Headscale.ts"

/**
 * `@containerscale/core/memory`: the services without their outside world, for unit tests of code
 * above them: the `Ipam` on an in-memory store, a `Member` without tailscaled and a `Netlink` over
 * a model of network namespaces. A separate entry point, so no binary loads them.
 */
export * from "./ipam/memoryStore.ts"
export * from "./tailscale/memberMemory.ts"
export * from "./netlink/memory.ts"

/**
 * `@containerscale/core/memory`: the services without their outside world, for unit tests of code
 * above them: the `Ipam` on an in-memory store and a `Member` without tailscaled. A separate entry
 * point, so no binary loads them.
 */
export * from "./ipam/memoryStore.ts"
export * from "./tailscale/memberMemory.ts"

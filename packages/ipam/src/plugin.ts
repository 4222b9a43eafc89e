import { decodePrevResult, type NetworkConfig, type Plugin, poolOf, requestedAddresses } from "@containerscale/cni"
import { CheckFailed, checkDataDir, InvalidNetworkConfig, Ipam } from "@containerscale/core"
import { Effect } from "effect"

/** The CNI IPAM plugin `containerscale-ipam`: host-local's contract over the core's Ipam. */

const sectionOf = (config: NetworkConfig) =>
  config.ipam === undefined
    ? Effect.fail(new InvalidNetworkConfig({ message: `the network configuration has no "ipam" section` }))
    : Effect.succeed(config.ipam)

const storeRef = (config: NetworkConfig) => ({ network: config.name, dataDir: config.ipam?.dataDir })

const hostOf = (cidr: string) => cidr.split("/")[0]

export const ipamPlugin: Plugin<Ipam> = {
  add: Effect.fnUntraced(function*(request) {
    const ipam = yield* Ipam
    const section = yield* sectionOf(request.config)
    const pool = yield* poolOf(request.config, section)
    const leases = yield* ipam.allocate({
      ...storeRef(request.config),
      pool,
      containerId: request.containerId,
      ifname: request.ifname,
      requested: requestedAddresses(request)
    })
    return {
      ips: leases.map((l) => (l.gateway === undefined ? { address: l.address } : { address: l.address, gateway: l.gateway })),
      ...(pool.routes.length > 0 ? { routes: pool.routes.map((r) => ({ ...r })) } : {})
    }
  }),

  del: Effect.fnUntraced(function*(request) {
    if (request.config.ipam === undefined) return // no ADD could have succeeded with this config
    const ipam = yield* Ipam
    yield* ipam.release({ ...storeRef(request.config), containerId: request.containerId, ifname: request.ifname })
  }),

  check: Effect.fnUntraced(function*(request) {
    const ipam = yield* Ipam
    const section = yield* sectionOf(request.config)
    const pool = yield* poolOf(request.config, section)
    const leases = yield* ipam.leases({ ...storeRef(request.config), pool, containerId: request.containerId, ifname: request.ifname })
    const who = `container ${request.containerId} (${request.ifname}) on network ${request.config.name}`
    if (leases.length === 0) {
      return yield* new CheckFailed({ message: `no address is recorded for ${who}: delete and re-add the container` })
    }
    const prev = yield* decodePrevResult(request.raw.prevResult).pipe(
      Effect.mapError(() =>
        new InvalidNetworkConfig({ message: `CHECK needs "prevResult", the result of the ADD it checks, in the network configuration` })
      )
    )
    const reported = new Set((prev.ips ?? []).map((ip) => hostOf(ip.address)))
    const missing = leases.filter((l) => !reported.has(l.ip))
    if (missing.length > 0) {
      return yield* new CheckFailed({
        message: `${who} holds ${missing.map((l) => l.ip).join(", ")}, which the previous result does not list: delete and re-add the container`
      })
    }
  }),

  gc: Effect.fnUntraced(function*(request) {
    if (request.valid === undefined || request.config.ipam === undefined) return
    const ipam = yield* Ipam
    yield* ipam.gc({ ...storeRef(request.config), valid: request.valid })
  }),

  status: Effect.fnUntraced(function*(request) {
    yield* checkDataDir(request.config.ipam?.dataDir, request.config.name)
    if (request.config.ipam !== undefined) yield* poolOf(request.config, request.config.ipam)
  })
}

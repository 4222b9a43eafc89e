import { Effect } from "effect"
import { createHash } from "node:crypto"
import type { IpamError, NetlinkFailure } from "../errors.ts"
import type { Lease } from "../ipam/allocator.ts"
import { Ipam } from "../ipam/Ipam.ts"
import { type Link, Netlink, type Step } from "../netlink/Netlink.ts"
import type { Pool } from "../pool.ts"

/**
 * Router mode on one node: a veth pair per container, the container end named `ifname` inside its
 * namespace, an address per range set from the pool, a default route via the range's gateway, and
 * on the node a host route to each container address plus the gateway address on the host end.
 * The node's pod CIDR is then what the node advertises to the tailnet.
 */

export const DEFAULT_MTU = 1280

export interface RouterAttachRequest {
  readonly network: string
  readonly dataDir?: string | undefined
  readonly pool: Pool
  readonly containerId: string
  readonly ifname: string
  /** the container's network namespace, by path */
  readonly netns: string
  /** the node's namespace; undefined is the caller's own (tests pass a throwaway one) */
  readonly nodeNetns?: string | undefined
  readonly mtu?: number | undefined
  readonly requested?: ReadonlyArray<string> | undefined
}

export interface RouterAttachment {
  readonly host: Link
  readonly container: Link
  readonly leases: ReadonlyArray<Lease>
  readonly routes: ReadonlyArray<{ readonly dst: string; readonly gw: string }>
}

/** A stable host-side name for the attachment: "cs" and 11 hex digits of its hash (13 bytes, under IFNAMSIZ). */
export const hostInterfaceName = (containerId: string, ifname: string): string =>
  `cs${createHash("sha256").update(`${containerId}\0${ifname}`).digest("hex").slice(0, 11)}`

const defaultRoute = (lease: Lease) => (lease.family === 4 ? "0.0.0.0/0" : "::/0")
const hostBits = (lease: Lease) => (lease.family === 4 ? 32 : 128)

const flags = (l: Lease) => (l.family === 6 ? ["noprefixroute", "nodad"] as const : ["noprefixroute"] as const)

/**
 * The container sends everything through the node, its neighbours too: the address carries no
 * subnet route, only the gateway is on-link (as the reference ptp plugin does).
 */
const containerSteps = (ifname: string, leases: ReadonlyArray<Lease>): Array<Step> => [
  { op: "up", dev: "lo" },
  { op: "up", dev: ifname },
  ...leases.map((l): Step => ({ op: "address", dev: ifname, cidr: l.address, flags: flags(l) })),
  ...leases.flatMap((l): Array<Step> =>
    l.gateway === undefined ? [] : [
      { op: "route", dst: `${l.gateway}/${hostBits(l)}`, dev: ifname, scope: "link" },
      { op: "route", dst: defaultRoute(l), via: l.gateway, dev: ifname }
    ]
  )
]

/** The alias of a host end: which network and attachment it belongs to, for GC. */
export const hostInterfaceAlias = (network: string, containerId: string, ifname: string) =>
  `containerscale:${network}:${containerId}:${ifname}`

export const parseHostInterfaceAlias = (alias: string | undefined) => {
  const [tag, network, containerId, ifname] = alias?.split(":") ?? []
  return tag === "containerscale" && network !== undefined && containerId !== undefined && ifname !== undefined
    ? { network, containerId, ifname }
    : undefined
}

const nodeSteps = (host: string, alias: string, leases: ReadonlyArray<Lease>): Array<Step> => [
  { op: "alias", dev: host, alias },
  { op: "up", dev: host },
  ...leases.flatMap((l): Array<Step> =>
    l.gateway === undefined ? [] : [{ op: "address", dev: host, cidr: `${l.gateway}/${hostBits(l)}`, flags: flags(l) }]
  ),
  ...leases.map((l): Step => ({ op: "route", dst: `${l.ip}/${hostBits(l)}`, dev: host, scope: "link" }))
]

export type RouterWireRequest = Omit<RouterAttachRequest, "pool" | "dataDir" | "requested">

/**
 * Wires a container to the node with addresses it already holds (from the Ipam or a delegated
 * IPAM plugin). A failure at any step removes the veth pair again.
 */
export const wireRouter = Effect.fnUntraced(function*(
  request: RouterWireRequest,
  leases: ReadonlyArray<Lease>
): Effect.fn.Return<RouterAttachment, NetlinkFailure, Netlink> {
  const netlink = yield* Netlink
  const host = hostInterfaceName(request.containerId, request.ifname)
  return yield* Effect.gen(function*() {
    const pair = yield* netlink.createVeth({
      name: host,
      netns: request.nodeNetns,
      peerName: request.ifname,
      peerNetns: request.netns,
      mtu: request.mtu ?? DEFAULT_MTU
    })
    yield* netlink.apply(containerSteps(request.ifname, leases), request.netns)
    const alias = hostInterfaceAlias(request.network, request.containerId, request.ifname)
    yield* netlink.apply(nodeSteps(host, alias, leases), request.nodeNetns)
    const forwarding = leases.map((l) => (l.family === 4 ? "net.ipv4.ip_forward" : "net.ipv6.conf.all.forwarding"))
    for (const key of new Set(forwarding)) yield* netlink.setSysctl(key, "1", request.nodeNetns)
    return {
      host: pair.host,
      container: pair.peer,
      leases,
      routes: leases.flatMap((l) => (l.gateway === undefined ? [] : [{ dst: defaultRoute(l), gw: l.gateway }]))
    }
  }).pipe(Effect.onError(() => netlink.deleteLink(host, request.nodeNetns).pipe(Effect.ignore)))
})

/** Removes the host end; the kernel removes the container end and the host routes with it. */
export const unwireRouter = Effect.fnUntraced(function*(
  request: Pick<RouterWireRequest, "containerId" | "ifname" | "nodeNetns">
): Effect.fn.Return<boolean, NetlinkFailure, Netlink> {
  return yield* (yield* Netlink).deleteLink(hostInterfaceName(request.containerId, request.ifname), request.nodeNetns)
})

/** Allocates from the Ipam and wires; a failure at any step leaves no link and no address. */
export const attachRouter = Effect.fnUntraced(function*(
  request: RouterAttachRequest
): Effect.fn.Return<RouterAttachment, IpamError | NetlinkFailure, Ipam | Netlink> {
  const ipam = yield* Ipam
  const leases = yield* ipam.allocate(request)
  return yield* wireRouter(request, leases).pipe(Effect.onError(() => ipam.release(request).pipe(Effect.ignore)))
})

/**
 * Removes the host ends of this network whose attachment is not in `valid`. Keeps going past
 * failures and returns them; the addresses are the IPAM's to collect.
 */
export const gcRouterLinks = Effect.fnUntraced(function*(request: {
  readonly network: string
  readonly nodeNetns?: string | undefined
  readonly valid: ReadonlyArray<{ readonly containerId: string; readonly ifname: string }>
}): Effect.fn.Return<ReadonlyArray<NetlinkFailure>, NetlinkFailure, Netlink> {
  const netlink = yield* Netlink
  const valid = new Set(request.valid.map((a) => `${a.containerId}:${a.ifname}`))
  const failures: Array<NetlinkFailure> = []
  for (const link of yield* netlink.links(request.nodeNetns)) {
    const owner = parseHostInterfaceAlias(link.alias)
    if (owner === undefined || owner.network !== request.network || valid.has(`${owner.containerId}:${owner.ifname}`)) continue
    yield* netlink.deleteLink(link.name, request.nodeNetns).pipe(Effect.catch((e) => Effect.sync(() => failures.push(e))))
  }
  return failures
})

export interface RouterDetachRequest {
  readonly network: string
  readonly dataDir?: string | undefined
  readonly containerId: string
  readonly ifname: string
  readonly nodeNetns?: string | undefined
}

/**
 * Removes the veth pair and releases the addresses. Succeeds when any of it is already gone, also
 * without the container's namespace.
 */
export const detachRouter = Effect.fnUntraced(function*(
  request: RouterDetachRequest
): Effect.fn.Return<void, IpamError | NetlinkFailure, Ipam | Netlink> {
  yield* unwireRouter(request)
  yield* (yield* Ipam).release(request)
})

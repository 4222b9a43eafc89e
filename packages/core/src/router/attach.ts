import { Cause, Effect, Option } from "effect"
import { fnv1a64 } from "../hash.ts"
import { AlreadyAttached, type IpamError, NetlinkFailure } from "../errors.ts"
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

/** Tailscale's address ranges (CGNAT IPv4 and its ULA IPv6): what a chained router interface routes. */
export const TAILNET_ROUTES: ReadonlyArray<ContainerRoute> = [{ dst: "100.64.0.0/10" }, { dst: "fd7a:115c:a1e0::/48" }]

/** A default route per address family: what a container gets when nothing else is said. */
export const DEFAULT_ROUTES: ReadonlyArray<ContainerRoute> = [{ dst: "0.0.0.0/0" }, { dst: "::/0" }]

/**
 * The routes of a router interface: the configured ones; beside another interface (which owns
 * the default route) only the tailnet's; else a default route per family.
 */
export const routerRoutes = (configured: ReadonlyArray<ContainerRoute> | undefined, besideAnother: boolean) =>
  configured ?? (besideAnother ? TAILNET_ROUTES : DEFAULT_ROUTES)

/** A route inside the container through the node; without `gw`, via the gateway of the lease of its family. */
export interface ContainerRoute {
  readonly dst: string
  readonly gw?: string | undefined
}

export interface RouterAttachRequest {
  readonly network: string
  readonly dataDir?: string | undefined
  readonly pool: Pool
  readonly containerId: string
  /** CNI_IFNAME: names the attachment (and so the host end) */
  readonly ifname: string
  /** the interface's name inside the container; `ifname` when undefined */
  readonly containerIfname?: string | undefined
  /** routes through the node; a default route per address family when undefined */
  readonly routes?: ReadonlyArray<ContainerRoute> | undefined
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

/** A stable host-side name for the attachment: "cs" and 11 hex digits (13 bytes, under IFNAMSIZ) of its hash. */
export const hostInterfaceName = (containerId: string, ifname: string): string => `cs${fnv1a64(`${containerId}\0${ifname}`).slice(0, 11)}`

const hostBits = (lease: Lease) => (lease.family === 4 ? 32 : 128)

const flags = (l: Lease) => (l.family === 6 ? ["noprefixroute", "nodad"] as const : ["noprefixroute"] as const)

const familyOf = (cidr: string) => (cidr.includes(":") ? 6 : 4)

/** The routes to install: each with its gateway, for the families the container has an address in. */
const resolveRoutes = (leases: ReadonlyArray<Lease>, routes: ReadonlyArray<ContainerRoute> | undefined) =>
  (routes ?? DEFAULT_ROUTES).flatMap((r) => {
    const gw = r.gw ?? leases.find((l) => l.family === familyOf(r.dst))?.gateway
    return gw === undefined ? [] : [{ dst: r.dst, gw }]
  })

/**
 * The container sends everything through the node, its neighbours too: the address carries no
 * subnet route, only the gateway is on-link (as the reference ptp plugin does).
 */
const containerSteps = (
  ifname: string,
  leases: ReadonlyArray<Lease>,
  routes: ReadonlyArray<{ readonly dst: string; readonly gw: string }>
): Array<Step> => [
  { op: "up", dev: "lo" },
  { op: "up", dev: ifname },
  ...leases.map((l): Step => ({ op: "address", dev: ifname, cidr: l.address, flags: flags(l) })),
  ...leases.flatMap((l): Array<Step> =>
    l.gateway === undefined ? [] : [{ op: "route", dst: `${l.gateway}/${hostBits(l)}`, dev: ifname, scope: "link" }]
  ),
  ...routes.map((r): Step => ({ op: "route", dst: r.dst, via: r.gw, dev: ifname }))
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

/**
 * Docker's variant: the container end stays in the node's namespace under `peer`, for the runtime
 * to move into the container and rename; the runtime sets the container's addresses and routes.
 * The host end answers ARP for the subnet (proxy ARP), so neighbours go through the node too.
 */
export interface RouterHandoff {
  readonly peer: string
}

export type RouterWireRequest =
  & Omit<RouterAttachRequest, "pool" | "dataDir" | "requested" | "netns">
  & ({ readonly netns: string; readonly handoff?: undefined } | { readonly netns?: undefined; readonly handoff: RouterHandoff })

/** The node's namespace seen from the `ip` process itself: where a handed-off peer end waits. */
const OWN_NETNS = "/proc/self/ns/net"

/** Runs `undo` when `effect` fails, is interrupted or dies, unless the attachment was there before. */
export const undoUnlessAttached = <A, E, R>(undo: Effect.Effect<unknown, unknown>) => (effect: Effect.Effect<A, E, R>) =>
  Effect.onError(effect, (cause) =>
    Option.exists(Cause.findErrorOption(cause), (e) => e instanceof AlreadyAttached) ? Effect.void : Effect.ignore(undo))

/**
 * Wires a container to the node with addresses it already holds (from the Ipam or a delegated
 * IPAM plugin), in two execs: the veth pair and the node's side, then the container's side. A
 * failure at any step removes the veth pair again, unless the pair was someone else's already.
 */
export const wireRouter = Effect.fnUntraced(function*(
  request: RouterWireRequest,
  leases: ReadonlyArray<Lease>
): Effect.fn.Return<RouterAttachment, NetlinkFailure | AlreadyAttached, Netlink> {
  const netlink = yield* Netlink
  const host = hostInterfaceName(request.containerId, request.ifname)
  const alias = hostInterfaceAlias(request.network, request.containerId, request.ifname)
  const mtu = request.mtu ?? DEFAULT_MTU
  const inside = request.containerIfname ?? request.ifname
  const routes = resolveRoutes(leases, request.routes)
  const handoff = request.handoff
  const veth: Step = { op: "veth", name: host, peerName: handoff?.peer ?? inside, peerNetns: request.netns ?? OWN_NETNS, mtu }
  return yield* Effect.gen(function*() {
    if (handoff !== undefined) {
      // dockerd creates an endpoint again after a failed join: the pair left from then is ours
      yield* netlink.deleteLink(host, request.nodeNetns)
      yield* netlink.deleteLink(handoff.peer, request.nodeNetns)
    }
    const [hostLink, peerLink] = yield* netlink.apply(
      [veth, ...nodeSteps(host, alias, leases), { op: "show", dev: host }, ...(handoff === undefined ? [] : [{ op: "show", dev: handoff.peer } as const])],
      request.nodeNetns
    ).pipe(
      Effect.catchIf((e) => e.failedOp === "veth" && e.exists === true, () => whichExists(request, host))
    )
    const containerLink = request.netns === undefined
      ? peerLink
      : (yield* netlink.apply([...containerSteps(inside, leases, routes), { op: "show", dev: inside }], request.netns))[0]
    const forwarding = leases.map((l) => (l.family === 4 ? "net.ipv4.ip_forward" : "net.ipv6.conf.all.forwarding"))
    for (const key of new Set(forwarding)) yield* netlink.setSysctl(key, "1", request.nodeNetns)
    if (handoff !== undefined) yield* netlink.setSysctl(`net.ipv4.conf.${host}.proxy_arp`, "1", request.nodeNetns)
    return {
      host: hostLink!,
      container: containerLink!,
      leases,
      routes: request.netns === undefined ? [] : routes
    }
  }).pipe(undoUnlessAttached(netlink.deleteLink(host, request.nodeNetns)))
})

/** The veth pair could not be made because a name is taken: the host end (attached before) or the container's. */
const whichExists = (request: RouterWireRequest, host: string) =>
  Effect.gen(function*() {
    const who = `container ${request.containerId} (${request.ifname})`
    if ((yield* (yield* Netlink).link(host, request.nodeNetns)) !== undefined) {
      return yield* new AlreadyAttached({
        message: `${who} is already attached: its host interface ${host} exists; DEL the attachment before adding it again`
      })
    }
    const inside = request.containerIfname ?? request.ifname
    return yield* new NetlinkFailure({
      message: `${inside} already exists in ${request.netns ?? "the node's namespace"} (${who}): after another interface plugin, name ours with ` +
        `"interface" in the network config (e.g. "tailnet0"); otherwise use another CNI_IFNAME or remove that interface`
    })
  })

/** Removes the host end; the kernel removes the container end and the host routes with it. */
export const unwireRouter = Effect.fnUntraced(function*(
  request: Pick<RouterWireRequest, "containerId" | "ifname" | "nodeNetns" | "handoff">
): Effect.fn.Return<boolean, NetlinkFailure, Netlink> {
  const netlink = yield* Netlink
  const removed = yield* netlink.deleteLink(hostInterfaceName(request.containerId, request.ifname), request.nodeNetns)
  // a peer end not handed over yet stays in the node's namespace when its host end goes
  if (request.handoff !== undefined) yield* netlink.deleteLink(request.handoff.peer, request.nodeNetns)
  return removed
})

/** Allocates from the Ipam and wires; a failure at any step leaves no link and no address. */
export const attachRouter = Effect.fnUntraced(function*(
  request: RouterAttachRequest
): Effect.fn.Return<RouterAttachment, IpamError | NetlinkFailure | AlreadyAttached, Ipam | Netlink> {
  const ipam = yield* Ipam
  const leases = yield* ipam.allocate(request)
  return yield* wireRouter(request, leases).pipe(undoUnlessAttached(ipam.release(request)))
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

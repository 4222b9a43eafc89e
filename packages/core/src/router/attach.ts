import { Cause, Effect, Option } from "effect"
import { fnv1a64 } from "../hash.ts"
import { AlreadyAttached, InvalidNetworkConfig, type IpamError, NetlinkFailure } from "../errors.ts"
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
  /** whose attachment it is: the host end's alias says so, for that runtime's GC; undefined is CNI's */
  readonly runtime?: RouterRuntime | undefined
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

/** The runtimes whose adapters wire router-mode attachments: each names its networks on its own. */
export type RouterRuntime = "cni" | "netavark" | "docker"

const RUNTIMES: ReadonlyArray<string> = ["cni", "netavark", "docker"] satisfies ReadonlyArray<RouterRuntime>

/**
 * The most bytes of each field of an alias, as written: the longest alias,
 * `containerscale:netavark:` + 64 + `:` + 128 + `:` + 32 = 250 bytes, stays under the kernel's
 * IFALIASZ (256 with the NUL). A longer field is written as `@@` and its hash.
 */
const ALIAS_BUDGET = { network: 64, containerId: 128, ifname: 32 } as const

const ALIAS_SAFE = /[A-Za-z0-9_.-]/

/**
 * One field of an alias: every byte outside `[A-Za-z0-9_.-]` as `@XX` (so no field holds a `:`,
 * and the alias holds only what the iproute2 layer passes: `[A-Za-z0-9_.:/@-]`), or `@@` and the
 * FNV-1a hash of the value when that is longer than `budget` (an `@` of a value is `@40`). The same
 * value always gives the same field: GC compares its valid list in this form.
 */
const aliasField = (value: string, budget: number): string => {
  let out = ""
  for (const byte of new TextEncoder().encode(value)) {
    const c = String.fromCharCode(byte)
    out += byte < 0x80 && ALIAS_SAFE.test(c) ? c : `@${byte.toString(16).toUpperCase().padStart(2, "0")}`
  }
  return out.length <= budget ? out : `@@${fnv1a64(value)}`
}

/** A field as it was, unless it is a hash (kept as written) or not ours (kept as it is). */
const unescapeField = (field: string): string => {
  if (field.startsWith("@@") || !/^(?:[A-Za-z0-9_.-]|@[0-9A-F]{2})*$/.test(field)) return field
  const bytes = (field.match(/@[0-9A-F]{2}|[^@]/g) ?? []).map((t) => (t.length === 3 ? parseInt(t.slice(1), 16) : t.charCodeAt(0)))
  return new TextDecoder().decode(new Uint8Array(bytes))
}

/**
 * The alias of a host end, which records whose it is for GC:
 * `containerscale:<runtime>:<network>:<containerId>:<ifname>`, each field as `aliasField` writes it.
 * The runtime keeps one runtime's GC off another's networks of the same name; undefined is CNI's.
 */
export const hostInterfaceAlias = (network: string, containerId: string, ifname: string, runtime: RouterRuntime = "cni") =>
  `containerscale:${runtime}:${aliasField(network, ALIAS_BUDGET.network)}:` +
  `${aliasField(containerId, ALIAS_BUDGET.containerId)}:${aliasField(ifname, ALIAS_BUDGET.ifname)}`

/**
 * The fields of an alias as written. The previous version wrote `containerscale:<network>:<id>:<ifname>`
 * for every runtime, unescaped; those are CNI's (`legacy`), as most were.
 */
const aliasFields = (alias: string | undefined) => {
  const parts = alias?.split(":") ?? []
  if (parts[0] !== "containerscale") return undefined
  if (parts.length === 5 && RUNTIMES.includes(parts[1]!)) {
    return { runtime: parts[1] as RouterRuntime, network: parts[2]!, containerId: parts[3]!, ifname: parts[4]!, legacy: false }
  }
  if (parts.length === 4) return { runtime: "cni" as const, network: parts[1]!, containerId: parts[2]!, ifname: parts[3]!, legacy: true }
  return undefined
}

export interface HostInterfaceOwner {
  readonly runtime: RouterRuntime
  readonly network: string
  readonly containerId: string
  readonly ifname: string
}

/**
 * Whose a host end is, from its alias; undefined when the alias is not ours. A field written as a
 * hash stays `@@` and the hash.
 */
export const parseHostInterfaceAlias = (alias: string | undefined): HostInterfaceOwner | undefined => {
  const fields = aliasFields(alias)
  if (fields === undefined) return undefined
  const { runtime, legacy, ...owner } = fields
  return legacy
    ? { runtime, ...owner }
    : { runtime, network: unescapeField(owner.network), containerId: unescapeField(owner.containerId), ifname: unescapeField(owner.ifname) }
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
): Effect.fn.Return<RouterAttachment, NetlinkFailure | AlreadyAttached | InvalidNetworkConfig, Netlink> {
  yield* checkLinkNames(request)
  const netlink = yield* Netlink
  const host = hostInterfaceName(request.containerId, request.ifname)
  const alias = hostInterfaceAlias(request.network, request.containerId, request.ifname, request.runtime)
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

/** A name the container's interface can have: what a link name may be and iproute2's batch syntax can carry. */
const LINK_NAME = /^(?!\.\.?$)[A-Za-z0-9_.@-]{1,15}$/

/** Refuses, before anything is allocated or made, a container interface name that no link can have. */
const checkLinkNames = (request: Pick<RouterWireRequest, "ifname" | "containerIfname" | "handoff">) => {
  const name = request.handoff?.peer ?? request.containerIfname ?? request.ifname
  return LINK_NAME.test(name) ? Effect.void : Effect.fail(new InvalidNetworkConfig({
    message: `the container's interface name ${JSON.stringify(name)} cannot be a link name: use 1-15 letters, digits, "_", ".", "-" or "@"`
  }))
}

/** Allocates from the Ipam and wires; a failure at any step leaves no link and no address. */
export const attachRouter = Effect.fnUntraced(function*(
  request: RouterAttachRequest
): Effect.fn.Return<RouterAttachment, IpamError | NetlinkFailure | AlreadyAttached | InvalidNetworkConfig, Ipam | Netlink> {
  yield* checkLinkNames(request)
  const ipam = yield* Ipam
  const leases = yield* ipam.allocate(request)
  return yield* wireRouter(request, leases).pipe(undoUnlessAttached(ipam.release(request)))
})

/**
 * Removes the host ends of this runtime's network whose attachment is not in `valid`; another
 * runtime's network of the same name is not this one. Compares the aliases' fields as written
 * (escaped or hashed alike), and the previous version's aliases as CNI's. Keeps going past
 * failures and returns them; the addresses are the IPAM's to collect.
 */
export const gcRouterLinks = Effect.fnUntraced(function*(request: {
  /** whose network it is; undefined is CNI's */
  readonly runtime?: RouterRuntime | undefined
  readonly network: string
  readonly nodeNetns?: string | undefined
  readonly valid: ReadonlyArray<{ readonly containerId: string; readonly ifname: string }>
}): Effect.fn.Return<ReadonlyArray<NetlinkFailure>, NetlinkFailure, Netlink> {
  const netlink = yield* Netlink
  const runtime = request.runtime ?? "cni"
  const network = aliasField(request.network, ALIAS_BUDGET.network)
  const valid = new Set(request.valid.map((a) => `${aliasField(a.containerId, ALIAS_BUDGET.containerId)}:${aliasField(a.ifname, ALIAS_BUDGET.ifname)}`))
  const validLegacy = new Set(request.valid.map((a) => `${a.containerId}\0${a.ifname}`))
  const failures: Array<NetlinkFailure> = []
  for (const link of yield* netlink.links(request.nodeNetns)) {
    const owner = aliasFields(link.alias)
    if (owner === undefined || owner.runtime !== runtime) continue
    const stale = owner.legacy
      ? owner.network === request.network && !validLegacy.has(`${owner.containerId}\0${owner.ifname}`)
      : owner.network === network && !valid.has(`${owner.containerId}:${owner.ifname}`)
    if (!stale) continue
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

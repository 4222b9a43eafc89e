import { Ip, Netlink, writeMagicDnsSuffix } from "@containerscale/core"
import { LocalApi, maskPrefs } from "@containerscale/core/member"
import { Effect, Result, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { recordPeerRoutes } from "./peerRoutes.ts"

/**
 * Router mode on the tailnet: the node's pod CIDRs (and the cluster's service CIDRs, when given)
 * become subnet routes of the node's tailscaled. One pass reads its prefs, adds the routes to
 * `AdvertiseRoutes` (keeping every other route, and dropping only routes this agent advertised
 * before and that are no longer wanted), makes the node accept the other nodes' routes and keep
 * the pods' source addresses (unless the operator manages those prefs), keeps IP forwarding on,
 * asks the control plane to approve the routes for this node and to take back its approval of the
 * ones dropped. What the agent advertises is kept in `<stateDir>/router.json`
 * (a route is recorded before it is advertised, and a dropped one is forgotten only once the
 * control plane took it back), so a changed pod CIDR replaces the old one at tailscaled and at the
 * control plane, even when a pass fails half way.
 */

export interface Approver {
  /** Approves `routes` for `nodeId` only, keeping what it had; says what was done. */
  readonly approve: (nodeId: string, routes: ReadonlyArray<string>) => Effect.Effect<string, { readonly message: string }>
  /** Takes `routes` out of `nodeId`'s approved routes, and nothing else; says what was done. */
  readonly withdraw: (nodeId: string, routes: ReadonlyArray<string>) => Effect.Effect<string, { readonly message: string }>
  /**
   * The routes the control plane has this node serve, as the tailnet's peers are told. The node's
   * own `Self.PrimaryRoutes` is no substitute: Headscale 0.29 sends a node its own approved routes
   * only when the node next reports its details, which can be minutes later.
   */
  readonly serving: (nodeId: string) => Effect.Effect<ReadonlyArray<string>, { readonly message: string }>
}

export interface RouterOptions {
  readonly stateDir: string
  readonly socket: string
  readonly podCidrs: Effect.Effect<ReadonlyArray<string>, { readonly message: string }>
  /**
   * The cluster's service CIDRs, advertised by every node that has them: the control plane makes
   * one node their primary and moves them to another when it goes offline.
   */
  readonly serviceCidrs?: ReadonlyArray<string> | undefined
  /**
   * `manage` (default): the node accepts the other nodes' routes (`RouteAll`) and does not
   * masquerade what it forwards from the tailnet to its pods (`NoSNAT`), so pods see each other's
   * own addresses. `leave`: the operator sets those prefs.
   */
  readonly nodePrefs?: "manage" | "leave" | undefined
  /**
   * The cluster's 4via6 site id: each IPv4 pod CIDR is also advertised as its via prefix, so that
   * peers reach this cluster's pods at `fd7a:115c:a1e0:b1a:0:<site>:<ipv4>` even when another
   * cluster on the tailnet uses the same pod CIDRs.
   */
  readonly siteId?: number | undefined
  /**
   * With `siteId`: advertise the via prefixes instead of the IPv4 pod CIDRs themselves, for a
   * cluster whose pod CIDRs another cluster on the tailnet also uses. Headscale makes one node the
   * primary for a prefix tailnet-wide and sends it to every node, whatever the policy, so two
   * clusters advertising the same prefix would route one cluster's pods into the other.
   */
  readonly viaOnly?: boolean | undefined
  readonly approver?: Approver | undefined
  /** where the forwarding sysctls go: the agent's own namespace when undefined (tests pass a stand-in node's) */
  readonly nodeNetns?: string | undefined
}

export interface RouterReport {
  readonly ok: boolean
  /** what is wrong when not ok */
  readonly reason?: string | undefined
  readonly podCidrs: ReadonlyArray<string>
  readonly advertised: ReadonlyArray<string>
  readonly added: ReadonlyArray<string>
  readonly removed: ReadonlyArray<string>
  /** the node's prefs this pass changed (`RouteAll`, `NoSNAT`) */
  readonly prefsChanged: ReadonlyArray<string>
  readonly approval?: string | undefined
  /** what the control plane said when it took back the dropped pod CIDRs */
  readonly withdrawal?: string | undefined
  /** the routes the control plane lets this node serve (its approver's word; else `Self.PrimaryRoutes`) */
  readonly serving: ReadonlyArray<string>
}

const RouterState = Schema.Struct({ advertised: Schema.Array(Schema.String) })

const stateFile = (stateDir: string) => path.join(stateDir, "router.json")

const readAdvertisedBefore = (stateDir: string): ReadonlyArray<string> => {
  try {
    return Schema.decodeUnknownSync(RouterState)(JSON.parse(fs.readFileSync(stateFile(stateDir), "utf8"))).advertised
  } catch {
    return []
  }
}

const writeAdvertised = (stateDir: string, advertised: ReadonlyArray<string>) => {
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 })
  fs.writeFileSync(`${stateFile(stateDir)}.tmp`, JSON.stringify({ advertised }), { mode: 0o600 })
  fs.renameSync(`${stateFile(stateDir)}.tmp`, stateFile(stateDir))
}

const viaPrefixes = (siteId: number, cidrs: ReadonlyArray<string>) =>
  cidrs.flatMap((c) => {
    const subnet = Ip.parseSubnet(c)
    return Result.isSuccess(subnet) && subnet.success.family === 4 ? [Ip.viaPrefix(siteId, subnet.success)] : []
  })

const forwardingKeys = (cidrs: ReadonlyArray<string>) =>
  [...new Set(cidrs.map((c) => (c.includes(":") ? "net.ipv6.conf.all.forwarding" : "net.ipv4.ip_forward")))]

/** One reconcile pass. Fails with a message when a step cannot be done; the caller retries. */
export const reconcileRouter = (options: RouterOptions): Effect.Effect<RouterReport, { readonly message: string }, Netlink | LocalApi> =>
  Effect.gen(function*(): Effect.fn.Return<RouterReport, { readonly message: string }, Netlink | LocalApi> {
    const netlink = yield* Netlink
    const api = (yield* LocalApi).client({ socket: options.socket, timeout: "10 seconds" })
    const podCidrs = yield* options.podCidrs
    const via = options.siteId === undefined ? [] : viaPrefixes(options.siteId, podCidrs)
    const viaOnly = options.viaOnly === true && via.length > 0
    const own = [...(viaOnly ? podCidrs.filter((c) => c.includes(":")) : podCidrs), ...via]
    const routes = [...own, ...(options.serviceCidrs ?? []).filter((r) => !own.includes(r))]
    const status = yield* api.status({ peers: false })
    const base = { podCidrs, added: [] as Array<string>, removed: [] as Array<string>, prefsChanged: [] as Array<string>, serving: status.Self.PrimaryRoutes ?? [] }
    if (status.BackendState !== "Running") {
      return { ...base, ok: false, reason: `the node's tailscaled is ${status.BackendState}, not Running`, advertised: [] }
    }
    const prefs = yield* api.prefs()
    const current = prefs.AdvertiseRoutes ?? []
    const before = readAdvertisedBefore(options.stateDir)
    const removed = current.filter((r) => before.includes(r) && !routes.includes(r))
    const added = routes.filter((r) => !current.includes(r))
    const wanted = [...current.filter((r) => !removed.includes(r)), ...added]
    if (routes.some((r) => !before.includes(r))) {
      yield* Effect.sync(() => writeAdvertised(options.stateDir, [...before, ...routes.filter((r) => !before.includes(r))]))
    }
    const nodePrefs = (options.nodePrefs ?? "manage") === "leave" ? {} : {
      ...(prefs.RouteAll ? {} : { RouteAll: true }),
      ...(prefs.NoSNAT ? {} : { NoSNAT: true })
    }
    const prefsChanged = Object.keys(nodePrefs)
    if (added.length > 0 || removed.length > 0 || prefsChanged.length > 0) {
      yield* api.editPrefs(maskPrefs({ ...(added.length > 0 || removed.length > 0 ? { AdvertiseRoutes: wanted } : {}), ...nodePrefs }))
      yield* Effect.logInfo("the node's prefs changed", { added, removed, advertised: wanted, prefs: nodePrefs })
    }
    // tailscaled's netstack answers the via prefixes itself: they need no forwarding
    for (const key of forwardingKeys(routes.filter((r) => !via.includes(r)))) yield* netlink.setSysctl(key, "1", options.nodeNetns)
    const approval = options.approver === undefined || routes.length === 0
      ? undefined
      : yield* options.approver.approve(status.Self.ID, routes)
    const dropped = before.filter((r) => !routes.includes(r))
    const withdrawal = options.approver === undefined || dropped.length === 0
      ? undefined
      : yield* options.approver.withdraw(status.Self.ID, dropped)
    if (dropped.length > 0) yield* Effect.sync(() => writeAdvertised(options.stateDir, routes))
    const latest = yield* api.status()
    yield* Effect.sync(() => {
      recordPeerRoutes(options.stateDir, Object.values(latest.Peer ?? {}), new Date())
      const suffix = latest.CurrentTailnet?.MagicDNSSuffix || latest.MagicDNSSuffix
      if (suffix) writeMagicDnsSuffix(options.stateDir, suffix)
    })
    const serving = options.approver === undefined ? latest.Self.PrimaryRoutes ?? [] : yield* options.approver.serving(status.Self.ID)
    const missing = options.approver === undefined ? [] : own.filter((c) => !serving.includes(c))
    return {
      ...base,
      ok: missing.length === 0,
      reason: missing.length === 0 ? undefined : `not yet served by this node: ${missing.join(", ")} (approval pending)`,
      advertised: wanted,
      added,
      removed,
      prefsChanged,
      approval,
      withdrawal,
      serving
    }
  })

import { DEFAULT_STATE_DIR, hostInterfaceAlias, hostInterfaceName, Ip, Netlink, type NetlinkFailure, type Step } from "@containerscale/core"
import { Duration, Effect, Fiber, Result } from "effect"
import * as fs from "node:fs"
import type { Logger } from "./log.ts"
import { authKeyText, OptionError, parseNetworkOptions, PREFIX } from "./options.ts"
import { type EndpointRecord, type NetworkRecord, SAFE_ID, type Store } from "./store.ts"

/**
 * The NetworkDriver half. Router mode: a veth pair per endpoint in the driver's (node's)
 * namespace; the host end `cs…` carries the gateway as /32, a host route to the container's
 * address and proxy ARP (so neighbours on the subnet go through the node too); the other end waits
 * under a temporary name until dockerd moves it into the sandbox as `eth<n>`. Member mode adds one
 * tailscaled per container inside its sandbox, started in the background after Join.
 */

export class DriverFailure extends Error {}
const fail = (message: string) => Effect.fail(new DriverFailure(message))

/** the tailnet's IPv4 range, routed through the node on --internal networks (which get no default route) */
const TAILNET_V4 = "100.64.0.0/10"
/** The node namespace seen from the `ip` process itself: the peer end stays next to the host end. */
const OWN_NETNS = "/proc/self/ns/net"

export interface MemberStatus {
  state: string
  fiber?: Fiber.Fiber<unknown, unknown> | undefined
}

export interface NetworkDriverOptions {
  readonly store: Store
  readonly stateDir: string
  readonly log: Logger
  readonly env: Readonly<Record<string, string | undefined>>
  /** the node's namespace (tests pass a throwaway one); the driver's own when undefined */
  readonly nodeNetns?: string | undefined
  /** how long the background member join waits for dockerd to move the interface */
  readonly moveTimeout?: Duration.Input | undefined
}

type Req = Record<string, any>

export const peerName = (host: string) => `cp${host.slice(2)}`

export const makeNetworkDriver = Effect.fnUntraced(function*(options: NetworkDriverOptions) {
  const netlink = yield* Netlink
  const { store, log, nodeNetns } = options
  const members = new Map<string, MemberStatus>()
  const nl = <A>(e: Effect.Effect<A, NetlinkFailure>) => Effect.mapError(e, (x) => new DriverFailure(x.message))
  const lift = <A>(f: () => A) =>
    Effect.try({ try: f, catch: (e) => (e instanceof DriverFailure ? e : new DriverFailure((e as Error).message ?? String(e))) })
  const id = (req: Req, key: string) => {
    const v = req[key]
    return typeof v === "string" && SAFE_ID.test(v) ? Effect.succeed(v) : fail(`${key} ${JSON.stringify(v)} is missing or not an ID`)
  }
  const network = (networkId: string) => {
    const n = store.networks.get(networkId)
    return n === undefined
      ? fail(`unknown network ${networkId.slice(0, 12)}: the driver has no record of it (its state directory ${store.root} was lost?); remove and recreate the network`)
      : Effect.succeed(n)
  }

  /** Creates the veth pair of an endpoint in the node namespace, replacing a stale one. */
  const wire = (n: NetworkRecord, e: EndpointRecord) =>
    Effect.gen(function*() {
      const prefixLen = 32
      const ip = e.address.split("/")[0]!
      const steps: Array<Step> = [
        { op: "veth", name: e.host, peerName: e.peer, peerNetns: OWN_NETNS, mtu: n.mtu },
        { op: "alias", dev: e.host, alias: hostInterfaceAlias(`docker-${n.id.slice(0, 12)}`, e.id.slice(0, 12), "docker") },
        { op: "up", dev: e.host },
        { op: "address", dev: e.host, cidr: `${n.gateway}/${prefixLen}`, flags: ["noprefixroute"] },
        { op: "route", dst: `${ip}/32`, dev: e.host, scope: "link" }
      ]
      yield* nl(netlink.deleteLink(e.host, nodeNetns))
      yield* nl(netlink.deleteLink(e.peer, nodeNetns))
      yield* nl(netlink.apply(steps, nodeNetns)).pipe(
        Effect.tapError(() => Effect.ignore(netlink.deleteLink(e.host, nodeNetns)))
      )
      yield* nl(netlink.setSysctl("net.ipv4.ip_forward", "1", nodeNetns))
      yield* nl(netlink.setSysctl(`net.ipv4.conf.${e.host}.proxy_arp`, "1", nodeNetns))
    })

  const stopMember = (e: EndpointRecord) =>
    Effect.gen(function*() {
      const m = members.get(e.id)
      if (m?.fiber !== undefined) yield* Fiber.interrupt(m.fiber)
      members.delete(e.id)
      if (e.identity === undefined) return
      const { leaveMember } = yield* Effect.promise(() => import("@containerscale/core/member"))
      yield* leaveMember({ stateDir: `${options.stateDir}/member`, identity: e.identity, keepState: false }).pipe(
        Effect.catch((err) => Effect.sync(() => log.warn("leaving the tailnet failed", { endpoint: e.id.slice(0, 12), error: err.message })))
      )
    })

  /** Member mode, in the background: wait until dockerd moved the interface, then run tailscaled in the sandbox. */
  const startMember = (n: NetworkRecord, e: EndpointRecord, sandboxKey: string) => {
    const status: MemberStatus = { state: "Starting" }
    members.set(e.id, status)
    const join = Effect.gen(function*() {
      const { joinMember, resolveMemberSettings } = yield* Effect.promise(() => import("@containerscale/core/member"))
      const deadline = Date.now() + Duration.toMillis(Duration.fromInputUnsafe(options.moveTimeout ?? "30 seconds"))
      while ((yield* nl(netlink.link(e.peer, nodeNetns))) !== undefined) {
        if (Date.now() > deadline) return yield* fail(`dockerd did not move ${e.peer} into the container`)
        yield* Effect.sleep("20 millis")
      }
      // dockerd disables IPv6 in sandboxes of IPv4-only networks; tailscaled puts its fd7a:… address on tailscale0
      if (n.options.userspace !== "true") {
        for (const k of ["net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"]) {
          yield* nl(netlink.setSysctl(k, "0", sandboxKey))
        }
      }
      const v = n.options
      const key = yield* lift(() => authKeyText(v, options.env))
      const settings = yield* resolveMemberSettings({
        hostname: (v.hostname ?? "{name}").replaceAll("{name}", "{id}"),
        tags: v.tags?.split(",").map((t) => t.trim()).filter((t) => t !== ""),
        loginServer: v["login-server"],
        userspace: v.userspace === undefined ? undefined : v.userspace === "true",
        tailscaledPath: v["tailscaled-path"],
        stateDir: options.stateDir,
        authKey: key
      }, `docker-${n.id.slice(0, 12)}`, { containerId: e.id }, {}, { withAuthKey: true }).pipe(
        Effect.mapError((x) => new DriverFailure(x.message))
      )
      status.state = "Joining"
      const member = yield* joinMember({
        stateDir: settings.memberRoot,
        network: `docker-${n.id.slice(0, 12)}`,
        containerId: e.id,
        ifname: "docker",
        netns: sandboxKey,
        identity: e.identity!,
        persistent: false,
        tailscaled: settings.tailscaled,
        userspace: settings.userspace,
        extraFlags: settings.extraFlags,
        prefs: settings.prefs,
        authKey: settings.authKey,
        timeout: Duration.seconds(settings.timeoutSeconds)
      }).pipe(Effect.mapError((x) => new DriverFailure(x.message)))
      status.state = `Running ${member.addresses.join(" ")}`
      log.info("container joined the tailnet", { endpoint: e.id.slice(0, 12), hostname: settings.prefs.hostname, addresses: member.addresses.join(",") })
    }).pipe(
      Effect.catch((err) =>
        Effect.sync(() => {
          status.state = `Failed: ${err.message}`
          log.error("container could not join the tailnet", { endpoint: e.id.slice(0, 12), error: err.message })
        })
      ),
      Effect.provideService(Netlink, netlink)
    )
    status.fiber = Effect.runFork(join)
  }

  const memberState = (e: EndpointRecord) =>
    Effect.gen(function*() {
      const m = members.get(e.id)
      if (m !== undefined) return m.state
      if (e.identity === undefined) return "Stopped"
      const { makeLocalApi, memberPaths } = yield* Effect.promise(() => import("@containerscale/core/member"))
      const socket = memberPaths(`${options.stateDir}/member`, e.identity).socket
      if (!fs.existsSync(socket)) return "Stopped"
      return yield* makeLocalApi({ socket, timeout: "1 second" }).status({ peers: false }).pipe(
        Effect.map((s) => `${s.BackendState} ${(s.Self?.TailscaleIPs ?? s.TailscaleIPs ?? []).join(" ")}`.trim()),
        Effect.catch(() => Effect.succeed("Unknown (tailscaled does not answer)"))
      )
    })

  return {
    members,
    capabilities: () => ({ Scope: "local", ConnectivityScope: "local" }),

    createNetwork: (req: Req) =>
      Effect.gen(function*() {
        const networkId = yield* id(req, "NetworkID")
        const opts = (req["Options"] ?? {}) as Req
        const generic = (opts["com.docker.network.generic"] ?? {}) as Record<string, unknown>
        const parsed = yield* lift(() => {
          try {
            return parseNetworkOptions(generic, options.env, (m) => log.warn(m, { network: networkId.slice(0, 12) }))
          } catch (e) {
            throw new DriverFailure((e as OptionError).message)
          }
        })
        const v4 = (Array.isArray(req["IPv4Data"]) ? req["IPv4Data"] : []) as Array<Req>
        if (v4.length !== 1) {
          return yield* fail(`containerscale networks take exactly one IPv4 subnet (got ${v4.length}): give one --subnet or none`)
        }
        const data = v4[0]!
        const pool = String(data["Pool"] ?? "")
        const gatewayCidr = typeof data["Gateway"] === "string" ? data["Gateway"] : ""
        if (pool === "" || pool === "0.0.0.0/0" || gatewayCidr === "") {
          return yield* fail(`containerscale needs an IPv4 subnet with a gateway: use the containerscale IPAM (--ipam-driver containerscale) or the default IPAM, not --ipam-driver null`)
        }
        const subnet = Ip.parseSubnet(pool)
        if (Result.isFailure(subnet) || subnet.success.family !== 4) return yield* fail(`pool ${pool} is not an IPv4 subnet`)
        if (Array.isArray(req["IPv6Data"]) && req["IPv6Data"].length > 0) {
          return yield* fail(`containerscale networks are IPv4 only: create the network without --ipv6`)
        }
        const values: Record<string, string> = {}
        for (const [k, val] of Object.entries(parsed.values)) if (val !== undefined) values[k] = val
        const record: NetworkRecord = {
          id: networkId,
          mode: parsed.mode,
          options: values,
          subnet: pool,
          gateway: gatewayCidr.split("/")[0]!,
          mtu: parsed.mtu,
          internal: opts["com.docker.network.internal"] === true
        }
        yield* lift(() => store.putNetwork(record))
        log.info("network created", { network: networkId.slice(0, 12), mode: record.mode, subnet: pool, gateway: record.gateway })
        return {}
      }),

    deleteNetwork: (req: Req) =>
      Effect.gen(function*() {
        const networkId = yield* id(req, "NetworkID")
        for (const e of [...store.endpoints.values()].filter((e) => e.networkId === networkId)) {
          yield* stopMember(e)
          yield* Effect.ignore(netlink.deleteLink(e.host, nodeNetns))
          yield* lift(() => store.deleteEndpoint(e.id))
        }
        if (store.networks.has(networkId)) log.info("network deleted", { network: networkId.slice(0, 12) })
        yield* lift(() => store.deleteNetwork(networkId))
        return {}
      }),

    createEndpoint: (req: Req) =>
      Effect.gen(function*() {
        const n = yield* network(yield* id(req, "NetworkID"))
        const endpointId = yield* id(req, "EndpointID")
        const iface = (req["Interface"] ?? {}) as Req
        const address = typeof iface["Address"] === "string" ? iface["Address"] : ""
        if (address === "") {
          return yield* fail(`the endpoint has no IPv4 address: containerscale networks need an IPAM that assigns one (not --ipam-driver null)`)
        }
        const host = hostInterfaceName(endpointId, "docker")
        const e: EndpointRecord = {
          networkId: n.id,
          id: endpointId,
          address,
          host,
          peer: peerName(host),
          identity: n.mode === "member" ? `docker-${n.id.slice(0, 12)}-${endpointId.slice(0, 12)}` : undefined
        }
        yield* wire(n, e)
        yield* lift(() => store.putEndpoint(e)).pipe(Effect.tapError(() => Effect.ignore(netlink.deleteLink(host, nodeNetns))))
        // fill only what came empty: the MAC stays the veth's own, the address is dockerd's
        return {}
      }),

    endpointOperInfo: (req: Req) =>
      Effect.gen(function*() {
        const endpointId = yield* id(req, "EndpointID")
        const e = store.endpoints.get(endpointId)
        if (e === undefined) return { Value: {} }
        const n = store.networks.get(e.networkId)
        const value: Record<string, string> = { [`${PREFIX}mode`]: n?.mode ?? "router", [`${PREFIX}host-interface`]: e.host }
        if (n?.mode === "member") value[`${PREFIX}tailnet`] = yield* memberState(e)
        return { Value: value }
      }),

    deleteEndpoint: (req: Req) =>
      Effect.gen(function*() {
        const endpointId = yield* id(req, "EndpointID")
        const e = store.endpoints.get(endpointId)
        const host = e?.host ?? hostInterfaceName(endpointId, "docker")
        if (e !== undefined) yield* stopMember(e)
        yield* nl(netlink.deleteLink(host, nodeNetns))
        yield* nl(netlink.deleteLink(peerName(host), nodeNetns))
        yield* lift(() => store.deleteEndpoint(endpointId))
        return {}
      }),

    join: (req: Req) =>
      Effect.gen(function*() {
        const n = yield* network(yield* id(req, "NetworkID"))
        const endpointId = yield* id(req, "EndpointID")
        const e = store.endpoints.get(endpointId)
        if (e === undefined) {
          return yield* fail(`unknown endpoint ${endpointId.slice(0, 12)}: the driver has no record of it; restart the container`)
        }
        const sandboxKey = typeof req["SandboxKey"] === "string" ? req["SandboxKey"] : ""
        if ((yield* nl(netlink.link(e.peer, nodeNetns))) === undefined) yield* wire(n, e)
        const joined = { ...e, sandboxKey }
        yield* lift(() => store.putEndpoint(joined))
        if (n.mode === "member") {
          if (sandboxKey === "") return yield* fail(`Join came without a SandboxKey: member mode needs the container's namespace`)
          startMember(n, joined, sandboxKey)
        }
        return {
          InterfaceName: { SrcName: e.peer, DstPrefix: "eth" },
          ...(n.internal
            ? { StaticRoutes: [{ Destination: TAILNET_V4, RouteType: 0, NextHop: n.gateway }] }
            : { Gateway: n.gateway }),
          DisableGatewayService: true
        }
      }),

    leave: (req: Req) =>
      Effect.gen(function*() {
        const endpointId = yield* id(req, "EndpointID")
        const e = store.endpoints.get(endpointId)
        if (e !== undefined) yield* stopMember(e)
        return {}
      }),

    stateDir: options.stateDir ?? DEFAULT_STATE_DIR
  }
})

export type NetworkDriver = Effect.Success<ReturnType<typeof makeNetworkDriver>>

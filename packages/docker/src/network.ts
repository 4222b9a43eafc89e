import { hostInterfaceName, Ip, type Lease, Netlink, Router, TAILNET_ROUTES } from "@containerscale/core"
import { checkMemberNetwork, Member } from "@containerscale/core/member"
import type { Log } from "@containerscale/core/log"
import { Duration, Effect, Fiber, Result, Schedule } from "effect"
import { decodeOptions, dockerSpelling, memberNetworkOf, ownOptions, PREFIX } from "./options.ts"
import { CreateEndpoint, CreateNetwork, decodeRequest, DriverError, EndpointRef, Join, NetworkRef } from "./protocol.ts"
import type { EndpointRecord, NetworkRecord, Store } from "./store.ts"

/**
 * The NetworkDriver half, over the core's workflows. Router mode: `Router.wire` in its hand-off
 * variant (the container end waits in the node's namespace until dockerd moves it into the
 * sandbox as `eth<n>`; the host end carries the gateway, a host route and proxy ARP). Member mode
 * adds the container to the tailnet (`Member.join`) in the background after Join, once dockerd
 * moved the interface.
 */

const fail = (message: string) => Effect.fail(new DriverError({ message }))


/** the attachment name of every Docker endpoint: one interface per endpoint */
const IFNAME = "docker"

export interface MemberStatus {
  state: string
  fiber?: Fiber.Fiber<unknown, unknown> | undefined
}

export interface NetworkDriverOptions {
  readonly store: Store
  readonly stateDir: string
  readonly log: Log
  readonly env: Readonly<Record<string, string | undefined>>
  /** the node's namespace (tests pass a throwaway one); the driver's own when undefined */
  readonly nodeNetns?: string | undefined
  /** how long the background member join waits for dockerd to move the interface */
  readonly moveTimeout?: Duration.Input | undefined
}

export const peerName = (host: string) => `cp${host.slice(2)}`

/** The network's name in the core's records: `docker-` and the first 12 of its id. */
const networkName = (n: { readonly id: string }) => `docker-${n.id.slice(0, 12)}`

const leaseOf = (n: NetworkRecord, e: EndpointRecord): Lease => ({
  family: 4,
  ip: e.address.split("/")[0]!,
  address: e.address,
  gateway: n.gateway,
  rangeSet: 0
})

export const makeNetworkDriver = Effect.fnUntraced(function*(options: NetworkDriverOptions) {
  const netlink = yield* Netlink
  const member = yield* Member
  const { store, log, nodeNetns } = options
  const members = new Map<string, MemberStatus>()
  const lift = <A>(f: () => A) => Effect.try({ try: f, catch: (e) => new DriverError({ message: (e as Error).message ?? String(e) }) })
  const network = (networkId: string) => {
    const n = store.networks.get(networkId)
    return n === undefined
      ? fail(`unknown network ${networkId.slice(0, 12)}: the driver has no record of it (its state directory ${store.root} was lost?); remove and recreate the network`)
      : Effect.succeed(n)
  }
  const attachmentOf = (n: NetworkRecord, e: EndpointRecord) => ({
    runtime: "docker" as const,
    network: networkName(n),
    containerId: e.id,
    ifname: IFNAME,
    nodeNetns,
    mtu: n.mtu,
    handoff: { peer: e.peer }
  })
  /** The member options of a network as recorded (without the prefix, as older records hold them too). */
  const memberNetwork = (n: NetworkRecord) =>
    memberNetworkOf(Object.fromEntries(Object.entries(n.options).map(([k, v]) => [PREFIX + k, v])), options.stateDir, options.env)

  const wire = (n: NetworkRecord, e: EndpointRecord) => Router.wire(attachmentOf(n, e), [leaseOf(n, e)]).pipe(Effect.provideService(Netlink, netlink))

  const stopMember = (n: NetworkRecord | undefined, e: EndpointRecord) =>
    Effect.gen(function*() {
      const m = members.get(e.id)
      if (m?.fiber !== undefined) yield* Fiber.interrupt(m.fiber)
      members.delete(e.id)
      if (n?.mode !== "member") return
      yield* Effect.flatMap(memberNetwork(n), (mn) => member.leave(mn, { network: networkName(n), containerId: e.id, ifname: IFNAME })).pipe(
        Effect.catch((err) => Effect.sync(() => log.warn("leaving the tailnet failed", { endpoint: e.id.slice(0, 12), error: err.message })))
      )
    })

  /** Member mode, in the background: wait until dockerd moved the interface, then join inside the sandbox. */
  const startMember = (n: NetworkRecord, e: EndpointRecord, sandboxKey: string) => {
    const status: MemberStatus = { state: "Starting" }
    members.set(e.id, status)
    const moved = netlink.link(e.peer, nodeNetns).pipe(
      Effect.flatMap((link) => (link === undefined ? Effect.void : fail(`dockerd did not move ${e.peer} into the container`))),
      Effect.retry(Schedule.spaced("20 millis")),
      Effect.timeoutOrElse({ duration: options.moveTimeout ?? "30 seconds", orElse: () => fail(`dockerd did not move ${e.peer} into the container`) })
    )
    const join = Effect.gen(function*() {
      yield* moved
      status.state = "Joining"
      const joined = yield* member.join(yield* memberNetwork(n), { network: networkName(n), containerId: e.id, ifname: IFNAME, netns: sandboxKey })
      status.state = `Running ${joined.addresses.map((a) => a.split("/")[0]).join(" ")}`
      log.info("container joined the tailnet", {
        endpoint: e.id.slice(0, 12),
        hostname: joined.settings.prefs.hostname,
        addresses: joined.addresses.join(",")
      })
    }).pipe(
      Effect.catch((err) =>
        Effect.sync(() => {
          status.state = `Failed: ${err.message}`
          log.error("container could not join the tailnet", { endpoint: e.id.slice(0, 12), error: err.message })
        })
      )
    )
    status.fiber = Effect.runFork(join)
  }

  const memberState = (n: NetworkRecord, e: EndpointRecord) => {
    const m = members.get(e.id)
    if (m !== undefined) return Effect.succeed(m.state)
    return Effect.flatMap(memberNetwork(n), (mn) => member.state(mn, { network: networkName(n), containerId: e.id, ifname: IFNAME })).pipe(
      Effect.orElseSucceed(() => "Unknown")
    )
  }

  const createNetwork = Effect.fnUntraced(function*(body: unknown) {
    const req = yield* decodeRequest(CreateNetwork)(body)
    const own = ownOptions(req.Options?.["com.docker.network.generic"] ?? {})
    const parsed = yield* decodeOptions(own)
    if (parsed.mode === "member") {
      for (const warning of yield* checkMemberNetwork(parsed.member, options.env, dockerSpelling)) {
        log.warn(warning, { network: req.NetworkID.slice(0, 12) })
      }
    }
    const v4 = req.IPv4Data ?? []
    if (v4.length !== 1) {
      return yield* fail(`containerscale networks take exactly one IPv4 subnet (got ${v4.length}): give one --subnet or none`)
    }
    const pool = v4[0]!.Pool ?? ""
    const gatewayCidr = v4[0]!.Gateway ?? ""
    if (pool === "" || pool === "0.0.0.0/0" || gatewayCidr === "") {
      return yield* fail(`containerscale needs an IPv4 subnet with a gateway: use the containerscale IPAM (--ipam-driver containerscale) or the default IPAM, not --ipam-driver null`)
    }
    const subnet = Ip.parseSubnet(pool)
    if (Result.isFailure(subnet) || subnet.success.family !== 4) return yield* fail(`pool ${pool} is not an IPv4 subnet`)
    if ((req.IPv6Data ?? []).length > 0) return yield* fail(`containerscale networks are IPv4 only: create the network without --ipv6`)
    const record: NetworkRecord = {
      id: req.NetworkID,
      mode: parsed.mode,
      options: Object.fromEntries(Object.entries(own).map(([k, v]) => [k.slice(PREFIX.length), v])),
      subnet: pool,
      gateway: gatewayCidr.split("/")[0]!,
      mtu: parsed.mtu,
      internal: req.Options?.["com.docker.network.internal"] === true
    }
    yield* lift(() => store.putNetwork(record))
    log.info("network created", { network: record.id.slice(0, 12), mode: record.mode, subnet: pool, gateway: record.gateway })
    return {}
  })

  const deleteNetwork = Effect.fnUntraced(function*(body: unknown) {
    const { NetworkID } = yield* decodeRequest(NetworkRef)(body)
    const n = store.networks.get(NetworkID)
    for (const e of [...store.endpoints.values()].filter((e) => e.networkId === NetworkID)) {
      yield* stopMember(n, e)
      if (n !== undefined) yield* Effect.ignore(Router.unwire(attachmentOf(n, e)).pipe(Effect.provideService(Netlink, netlink)))
      yield* lift(() => store.deleteEndpoint(e.id))
    }
    if (n !== undefined) log.info("network deleted", { network: NetworkID.slice(0, 12) })
    yield* lift(() => store.deleteNetwork(NetworkID))
    return {}
  })

  const createEndpoint = Effect.fnUntraced(function*(body: unknown) {
    const req = yield* decodeRequest(CreateEndpoint)(body)
    const n = yield* network(req.NetworkID)
    const address = req.Interface?.Address ?? ""
    if (address === "") {
      return yield* fail(`the endpoint has no IPv4 address: containerscale networks need an IPAM that assigns one (not --ipam-driver null)`)
    }
    const host = hostInterfaceName(req.EndpointID, IFNAME)
    // wiring replaces a pair left under these names: only a pair no recorded endpoint owns (a
    // crash between wiring and recording it); dockerd gives every new endpoint a new ID
    const known = store.endpoints.get(req.EndpointID) ?? [...store.endpoints.values()].find((x) => x.host === host)
    if (known !== undefined) {
      return yield* fail(
        `endpoint ${req.EndpointID.slice(0, 12)} exists already (host interface ${known.host}, network ${known.networkId.slice(0, 12)}): ` +
          `delete it before creating it again`
      )
    }
    const e: EndpointRecord = { networkId: n.id, id: req.EndpointID, address, host, peer: peerName(host) }
    yield* wire(n, e).pipe(Effect.mapError((x) => new DriverError({ message: x.message })))
    yield* lift(() => store.putEndpoint(e)).pipe(Effect.tapError(() => Effect.ignore(netlink.deleteLink(host, nodeNetns))))
    // fill only what came empty: the MAC stays the veth's own, the address is dockerd's
    return {}
  })

  const endpointOperInfo = Effect.fnUntraced(function*(body: unknown) {
    const { EndpointID } = yield* decodeRequest(EndpointRef)(body)
    const e = store.endpoints.get(EndpointID)
    if (e === undefined) return { Value: {} }
    const n = store.networks.get(e.networkId)
    const value: Record<string, string> = { [`${PREFIX}mode`]: n?.mode ?? "router", [`${PREFIX}host-interface`]: e.host }
    if (n?.mode === "member") value[`${PREFIX}tailnet`] = yield* memberState(n, e)
    return { Value: value }
  })

  const deleteEndpoint = Effect.fnUntraced(function*(body: unknown) {
    const { EndpointID } = yield* decodeRequest(EndpointRef)(body)
    const e = store.endpoints.get(EndpointID)
    const host = e?.host ?? hostInterfaceName(EndpointID, IFNAME)
    if (e !== undefined) yield* stopMember(store.networks.get(e.networkId), e)
    yield* Router.unwire({ containerId: EndpointID, ifname: IFNAME, nodeNetns, handoff: { peer: peerName(host) } }).pipe(
      Effect.provideService(Netlink, netlink),
      Effect.mapError((x) => new DriverError({ message: x.message }))
    )
    yield* lift(() => store.deleteEndpoint(EndpointID))
    return {}
  })

  const join = Effect.fnUntraced(function*(body: unknown) {
    const req = yield* decodeRequest(Join)(body)
    const n = yield* network(req.NetworkID)
    const e = store.endpoints.get(req.EndpointID)
    if (e === undefined) {
      return yield* fail(`unknown endpoint ${req.EndpointID.slice(0, 12)}: the driver has no record of it; restart the container`)
    }
    const sandboxKey = req.SandboxKey ?? ""
    const peer = yield* netlink.link(e.peer, nodeNetns).pipe(Effect.mapError((x) => new DriverError({ message: x.message })))
    if (peer === undefined) yield* wire(n, e).pipe(Effect.mapError((x) => new DriverError({ message: x.message })))
    yield* lift(() => store.putEndpoint({ ...e, sandboxKey }))
    if (n.mode === "member") {
      if (sandboxKey === "") return yield* fail(`Join came without a SandboxKey: member mode needs the container's namespace`)
      startMember(n, e, sandboxKey)
    }
    return {
      InterfaceName: { SrcName: e.peer, DstPrefix: "eth" },
      // an --internal network gets no default route: only the tailnet (IPv4, as the network) goes through the node
      ...(n.internal
        ? { StaticRoutes: TAILNET_ROUTES.filter((r) => !r.dst.includes(":")).map((r) => ({ Destination: r.dst, RouteType: 0, NextHop: n.gateway })) }
        : { Gateway: n.gateway }),
      DisableGatewayService: true
    }
  })

  const leave = Effect.fnUntraced(function*(body: unknown) {
    const { EndpointID } = yield* decodeRequest(EndpointRef)(body)
    const e = store.endpoints.get(EndpointID)
    if (e !== undefined) yield* stopMember(store.networks.get(e.networkId), e)
    return {}
  })

  return {
    members,
    capabilities: () => ({ Scope: "local", ConnectivityScope: "local" }),
    createNetwork,
    deleteNetwork,
    createEndpoint,
    endpointOperInfo,
    deleteEndpoint,
    join,
    leave,
    stateDir: options.stateDir
  }
})

export type NetworkDriver = Effect.Success<ReturnType<typeof makeNetworkDriver>>

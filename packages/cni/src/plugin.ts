import {
  CheckFailed,
  cniModeOf,
  DEFAULT_MTU,
  dnsLedBy,
  InvalidNetworkConfig,
  type Ipam,
  type Lease,
  type Netlink,
  QUAD_100,
  readMagicDnsSuffix,
  Router,
  routerRoutes,
  stateDirOf,
  undoUnlessAttached
} from "@containerscale/core"
import { describeIssue } from "@containerscale/core/internal"
import { type Member } from "@containerscale/core/member"
import { Effect, Schema } from "effect"
import { poolOf } from "./config.ts"
import { execDelegate } from "./delegate.ts"
import { memberPlugin } from "./member.ts"
import { type CniResult, decodePrevResult } from "./result.ts"
import { type CniRequest, containerNetns, type Plugin, requestedAddresses } from "./skel.ts"

/**
 * The `containerscale` CNI plugin in router mode (member mode is in member.ts).
 * Addresses come from the core's Ipam in-process when `ipam.type` is containerscale-ipam, and from
 * the IPAM plugin `ipam.type` names, found through CNI_PATH, otherwise.
 */

const PluginConfig = Schema.Struct({
  mode: Schema.optional(Schema.Literals(["router", "member"])),
  mtu: Schema.optional(Schema.Int.check(Schema.isBetween({ minimum: 576, maximum: 65535 }))),
  /** router mode: the pods resolve tailnet names through the node's tailscaled (100.100.100.100 first) */
  magicDns: Schema.optional(Schema.Boolean),
  interface: Schema.optional(Schema.String.check(Schema.isPattern(/^(?!\.\.?$)[^\s/:]{1,15}$/, {
    message: "an interface name of 1-15 characters without white space, \"/\" or \":\""
  })))
})

const decodePluginConfig = Schema.decodeUnknownEffect(PluginConfig, { errors: "all" })

const IN_PROCESS_IPAM = "containerscale-ipam"

const routerConfig = (request: Pick<CniRequest, "raw" | "config">) =>
  Effect.gen(function*() {
    const own = yield* decodePluginConfig(request.raw).pipe(
      Effect.mapError((e) => new InvalidNetworkConfig({ message: `invalid network configuration: ${describeIssue(e.issue)}` }))
    )
    const section = request.config.ipam
    if (section === undefined) {
      return yield* new InvalidNetworkConfig({
        message: `router mode${request.raw["mode"] === undefined ? " (the default)" : ""} needs an "ipam" section, e.g. ` +
          `{"type": "containerscale-ipam", "ranges": [[{"subnet": "10.244.1.0/24"}]]}` +
          (request.raw["mode"] === undefined ? `; for member mode, add "mode": "member"` : "")
      })
    }
    return { mtu: own.mtu ?? DEFAULT_MTU, inside: own.interface, magicDns: own.magicDns === true, section, delegated: section.type !== IN_PROCESS_IPAM }
  })

const hostOf = (cidr: string) => cidr.split("/")[0]

/** The result's DNS: what came before, led by MagicDNS (the node's tailscaled, and the tailnet's suffix the agent recorded) when asked for. */
const routerDns = (dns: CniResult["dns"], magicDns: boolean, request: Pick<CniRequest, "raw" | "env">) => {
  if (!magicDns) return dns === undefined ? {} : { dns }
  const suffix = readMagicDnsSuffix(stateDirOf(request.raw, request.env))
  return { dns: dnsLedBy(dns, { nameservers: [QUAD_100], search: suffix === undefined ? [] : [suffix] }) }
}

const decodeIpamResult = (json: unknown, type: string) =>
  decodePrevResult(json).pipe(
    Effect.mapError(() => new InvalidNetworkConfig({ message: `ipam plugin "${type}" answered ADD without a valid result` }))
  )

/** The addresses a delegated IPAM plugin handed out, as the core's leases. */
const leasesOf = (result: CniResult): ReadonlyArray<Lease> =>
  (result.ips ?? []).map((ip, rangeSet) => ({
    family: ip.address.includes(":") ? 6 : 4,
    ip: hostOf(ip.address)!,
    address: ip.address,
    gateway: ip.gateway,
    rangeSet
  }))

export const routerPlugin: Plugin<Ipam | Netlink> = {
  add: Effect.fnUntraced(function*(request) {
    const { mtu, inside, magicDns, section, delegated } = yield* routerConfig(request)
    const netns = yield* containerNetns(request)
    const prev = request.raw.prevResult === undefined ? undefined : yield* decodePrevResult(request.raw.prevResult).pipe(
      Effect.mapError(() => new InvalidNetworkConfig({ message: `"prevResult" is not a CNI result: pass on what the previous plugin returned` }))
    )
    const chained = (prev?.interfaces?.length ?? 0) > 0
    const wire = {
      runtime: "cni" as const,
      network: request.config.name,
      containerId: request.containerId,
      ifname: request.ifname,
      containerIfname: inside,
      routes: routerRoutes(section.routes, chained),
      netns,
      mtu
    }
    const a = delegated
      ? yield* Effect.gen(function*() {
        const leases = leasesOf(yield* decodeIpamResult(yield* execDelegate(section.type, "ADD", request), section.type))
        return yield* Router.wire(wire, leases).pipe(undoUnlessAttached(execDelegate(section.type, "DEL", request)))
      })
      : yield* Router.attach({ ...wire, dataDir: section.dataDir, pool: yield* poolOf(request.config, section), requested: requestedAddresses(request) })
    const before = prev?.interfaces ?? []
    return {
      interfaces: [
        ...before,
        { name: a.host.name, ...(a.host.mac === undefined ? {} : { mac: a.host.mac }) },
        { name: a.container.name, ...(a.container.mac === undefined ? {} : { mac: a.container.mac }), sandbox: netns, mtu }
      ],
      ips: [
        ...(prev?.ips ?? []),
        ...a.leases.map((l) => ({ address: l.address, ...(l.gateway === undefined ? {} : { gateway: l.gateway }), interface: before.length + 1 }))
      ],
      routes: [...(prev?.routes ?? []), ...a.routes.map((r) => ({ ...r }))],
      ...routerDns(prev?.dns ?? request.config.dns, magicDns, request)
    }
  }),

  del: Effect.fnUntraced(function*(request) {
    const section = request.config.ipam
    if (section === undefined || section.type !== IN_PROCESS_IPAM) {
      yield* Router.unwire(request)
      if (section !== undefined) yield* execDelegate(section.type, "DEL", request)
    } else {
      yield* Router.detach({ network: request.config.name, dataDir: section.dataDir, containerId: request.containerId, ifname: request.ifname })
    }
  }),

  check: Effect.fnUntraced(function*(request) {
    const { inside, section, delegated } = yield* routerConfig(request)
    const prev = yield* decodePrevResult(request.raw.prevResult).pipe(
      Effect.mapError(() => new InvalidNetworkConfig({ message: `CHECK needs "prevResult", the result of the ADD it checks` }))
    )
    const name = inside ?? request.ifname
    const index = (prev.interfaces ?? []).findIndex((i) => i.name === name && i.sandbox !== undefined)
    if (index < 0) {
      return yield* new CheckFailed({ message: `prevResult lists no interface ${name} in a sandbox for container ${request.containerId} (${request.ifname})` })
    }
    yield* Router.check({
      network: request.config.name,
      containerId: request.containerId,
      ifname: request.ifname,
      containerIfname: inside,
      netns: request.netns!,
      addresses: (prev.ips ?? []).filter((ip) => ip.interface === index).map((ip) => ip.address),
      ipam: delegated
        ? execDelegate(section.type, "CHECK", request)
        : { dataDir: section.dataDir, pool: yield* poolOf(request.config, section) }
    })
  }),

  gc: Effect.fnUntraced(function*(request) {
    if (request.valid === undefined) return
    const section = request.config.ipam
    yield* Router.gc({
      runtime: "cni",
      network: request.config.name,
      valid: request.valid,
      ipam: section === undefined ? undefined : section.type === IN_PROCESS_IPAM ? section : execDelegate(section.type, "GC", request)
    })
  }),

  status: Effect.fnUntraced(function*(request) {
    const { section, delegated } = yield* routerConfig(request)
    if (!delegated) yield* poolOf(request.config, section)
    yield* Router.status({ ipam: delegated ? execDelegate(section.type, "STATUS", request) : section })
  })
}

type Services = Ipam | Netlink | Member

/** Router or member mode, as `cniModeOf` reads the config. */
const pluginFor = (raw: Readonly<Record<string, unknown>>) => {
  const mode = cniModeOf(raw)
  return mode === "router"
    ? Effect.succeed<Plugin<Services>>(routerPlugin)
    : mode === "member"
    ? Effect.succeed<Plugin<Services>>(memberPlugin)
    : Effect.fail(new InvalidNetworkConfig({ message: `"mode" must be "router" or "member", not ${JSON.stringify(mode)}` }))
}

/** The `containerscale` plugin: router or member mode, as the network config says. */
export const containerscalePlugin: Plugin<Services> = {
  add: (request) => Effect.flatMap(pluginFor(request.raw), (p) => p.add(request)),
  del: (request) => Effect.flatMap(pluginFor(request.raw), (p) => p.del(request)),
  check: (request) => Effect.flatMap(pluginFor(request.raw), (p) => p.check(request)),
  gc: (request) => Effect.flatMap(pluginFor(request.raw), (p) => p.gc(request)),
  status: (request) => Effect.flatMap(pluginFor(request.raw), (p) => p.status(request))
}

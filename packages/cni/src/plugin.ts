import {
  attachRouter,
  CheckFailed,
  DEFAULT_MTU,
  checkDataDir,
  describeIssue,
  gcRouterLinks,
  hostInterfaceName,
  InvalidEnvironment,
  InvalidNetworkConfig,
  Ipam,
  type Lease,
  Netlink,
  NotAvailable,
  poolOf,
  TAILNET_ROUTES,
  undoUnlessAttached,
  unwireRouter,
  wireRouter
} from "@containerscale/core"
import { Effect, Schema } from "effect"
import * as fs from "node:fs"
import { execDelegate } from "./delegate.ts"
import { memberPlugin } from "./member.ts"
import { type CniResult, decodePrevResult } from "./result.ts"
import { type CniRequest, type Plugin, type PluginError, requestedAddresses } from "./skel.ts"

/**
 * The `containerscale` CNI plugin in router mode (member mode is in member.ts).
 * Addresses come from the core's Ipam in-process when `ipam.type` is containerscale-ipam, and from
 * the IPAM plugin `ipam.type` names, found through CNI_PATH, otherwise.
 */

const PluginConfig = Schema.Struct({
  mode: Schema.optional(Schema.Literals(["router", "member"])),
  mtu: Schema.optional(Schema.Int.check(Schema.isBetween({ minimum: 576, maximum: 65535 }))),
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
        message: `router mode needs an "ipam" section, e.g. {"type": "containerscale-ipam", "ranges": [[{"subnet": "10.244.1.0/24"}]]}`
      })
    }
    return { mtu: own.mtu ?? DEFAULT_MTU, inside: own.interface, section, delegated: section.type !== IN_PROCESS_IPAM }
  })

const hostOf = (cidr: string) => cidr.split("/")[0]

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
    const { mtu, inside, section, delegated } = yield* routerConfig(request)
    if (!fs.existsSync(request.netns!)) {
      return yield* new InvalidEnvironment({
        message: `CNI_NETNS ${request.netns} does not exist: the runtime must create the container's network namespace before ADD`
      })
    }
    const prev = request.raw.prevResult === undefined ? undefined : yield* decodePrevResult(request.raw.prevResult).pipe(
      Effect.mapError(() => new InvalidNetworkConfig({ message: `"prevResult" is not a CNI result: pass on what the previous plugin returned` }))
    )
    const chained = (prev?.interfaces?.length ?? 0) > 0
    const wire = {
      network: request.config.name,
      containerId: request.containerId,
      ifname: request.ifname,
      containerIfname: inside,
      // after another interface plugin, which owns the default route, only the tailnet goes through us
      routes: section.routes ?? (chained ? TAILNET_ROUTES : undefined),
      netns: request.netns!,
      mtu
    }
    const a = delegated
      ? yield* Effect.gen(function*() {
        const leases = leasesOf(yield* decodeIpamResult(yield* execDelegate(section.type, "ADD", request), section.type))
        return yield* wireRouter(wire, leases).pipe(undoUnlessAttached(execDelegate(section.type, "DEL", request)))
      })
      : yield* attachRouter({ ...wire, dataDir: section.dataDir, pool: yield* poolOf(request.config, section), requested: requestedAddresses(request) })
    const before = prev?.interfaces ?? []
    return {
      interfaces: [
        ...before,
        { name: a.host.name, ...(a.host.mac === undefined ? {} : { mac: a.host.mac }) },
        { name: a.container.name, ...(a.container.mac === undefined ? {} : { mac: a.container.mac }), sandbox: request.netns!, mtu }
      ],
      ips: [
        ...(prev?.ips ?? []),
        ...a.leases.map((l) => ({ address: l.address, ...(l.gateway === undefined ? {} : { gateway: l.gateway }), interface: before.length + 1 }))
      ],
      routes: [...(prev?.routes ?? []), ...a.routes.map((r) => ({ ...r }))],
      ...(prev?.dns ?? request.config.dns) === undefined ? {} : { dns: prev?.dns ?? request.config.dns }
    }
  }),

  del: Effect.fnUntraced(function*(request) {
    yield* unwireRouter(request)
    const section = request.config.ipam
    if (section === undefined) return
    if (section.type === IN_PROCESS_IPAM) {
      yield* (yield* Ipam).release({
        network: request.config.name,
        dataDir: section.dataDir,
        containerId: request.containerId,
        ifname: request.ifname
      })
    } else {
      yield* execDelegate(section.type, "DEL", request)
    }
  }),

  check: Effect.fnUntraced(function*(request) {
    const { inside, section, delegated } = yield* routerConfig(request)
    const prev = yield* decodePrevResult(request.raw.prevResult).pipe(
      Effect.mapError(() => new InvalidNetworkConfig({ message: `CHECK needs "prevResult", the result of the ADD it checks` }))
    )
    const netlink = yield* Netlink
    const who = `container ${request.containerId} (${request.ifname})`
    if (!fs.existsSync(request.netns!)) {
      return yield* new CheckFailed({ message: `the network namespace ${request.netns} of ${who} is gone: delete the container` })
    }
    const host = hostInterfaceName(request.containerId, request.ifname)
    if ((yield* netlink.link(host)) === undefined) {
      return yield* new CheckFailed({ message: `the host end ${host} of ${who} is gone: delete and re-add the container` })
    }
    const name = inside ?? request.ifname
    if ((yield* netlink.link(name, request.netns)) === undefined) {
      return yield* new CheckFailed({ message: `${name} is gone from ${request.netns} (${who}): delete and re-add the container` })
    }
    const index = (prev.interfaces ?? []).findIndex((i) => i.name === name && i.sandbox !== undefined)
    if (index < 0) return yield* new CheckFailed({ message: `prevResult lists no interface ${name} in a sandbox for ${who}` })
    const ours = (prev.ips ?? []).filter((ip) => ip.interface === index)
    const have = new Set((yield* netlink.addresses(name, request.netns)).map((a) => `${a.ip}/${a.prefix}`))
    const missing = ours.filter((ip) => !have.has(ip.address)).map((ip) => ip.address)
    if (missing.length > 0) {
      return yield* new CheckFailed({ message: `${who} lost ${missing.join(", ")} on ${name}: delete and re-add the container` })
    }
    if (delegated) return yield* execDelegate(section.type, "CHECK", request).pipe(Effect.asVoid)
    const pool = yield* poolOf(request.config, section)
    const leases = yield* (yield* Ipam).leases({
      network: request.config.name,
      dataDir: section.dataDir,
      pool,
      containerId: request.containerId,
      ifname: request.ifname
    })
    const held = new Set(leases.map((l) => l.ip))
    const unrecorded = ours.map((ip) => hostOf(ip.address)).filter((ip) => ip !== undefined && !held.has(ip))
    if (unrecorded.length > 0) {
      return yield* new CheckFailed({ message: `the IPAM store no longer records ${unrecorded.join(", ")} for ${who}: delete and re-add the container` })
    }
  }),

  gc: Effect.fnUntraced(function*(request) {
    if (request.valid === undefined) return
    const failures: Array<PluginError> = [...yield* gcRouterLinks({ network: request.config.name, valid: request.valid })]
    const section = request.config.ipam
    const collect = section === undefined
      ? Effect.void
      : section.type === IN_PROCESS_IPAM
      ? (yield* Ipam).gc({ network: request.config.name, dataDir: section.dataDir, valid: request.valid })
      : execDelegate(section.type, "GC", request)
    yield* collect.pipe(Effect.catch((e: PluginError) => Effect.sync(() => failures.push(e))))
    if (failures.length > 0) {
      return yield* new NotAvailable({
        message: `GC finished with ${failures.length} failure(s): ${failures.map((f) => f.message).join("; ")}`
      })
    }
  }),

  status: Effect.fnUntraced(function*(request) {
    const { section, delegated } = yield* routerConfig(request)
    if (delegated) {
      yield* execDelegate(section.type, "STATUS", request)
    } else {
      yield* poolOf(request.config, section)
      yield* checkDataDir(section.dataDir)
    }
    const netlink = yield* Netlink
    yield* Effect.andThen(netlink.ready, netlink.links()).pipe(
      Effect.mapError((e) => new NotAvailable({ message: `not ready: ${e.message}` }))
    )
  })
}

/** Member mode unless the config says `"mode": "router"` (member is the default, as in ContainerScale). */
const pluginFor = (raw: Readonly<Record<string, unknown>>) =>
  raw["mode"] === "router"
    ? Effect.succeed<Plugin<Ipam | Netlink>>(routerPlugin)
    : raw["mode"] === undefined || raw["mode"] === "member"
    ? Effect.succeed<Plugin<Ipam | Netlink>>(memberPlugin)
    : Effect.fail(new InvalidNetworkConfig({ message: `"mode" must be "router" or "member", not ${JSON.stringify(raw["mode"])}` }))

/** The `containerscale` plugin: router or member mode, as the network config says. */
export const containerscalePlugin: Plugin<Ipam | Netlink> = {
  add: (request) => Effect.flatMap(pluginFor(request.raw), (p) => p.add(request)),
  del: (request) => Effect.flatMap(pluginFor(request.raw), (p) => p.del(request)),
  check: (request) => Effect.flatMap(pluginFor(request.raw), (p) => p.check(request)),
  gc: (request) => Effect.flatMap(pluginFor(request.raw), (p) => p.gc(request)),
  status: (request) => Effect.flatMap(pluginFor(request.raw), (p) => p.status(request))
}

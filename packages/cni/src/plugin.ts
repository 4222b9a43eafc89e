import {
  attachRouter,
  CheckFailed,
  DEFAULT_MTU,
  defaultIpamOptions,
  describeIssue,
  detachRouter,
  gcRouter,
  hostInterfaceName,
  InvalidNetworkConfig,
  Ipam,
  type IpamSection,
  Netlink,
  NotAvailable,
  resolvePool
} from "@containerscale/core"
import { Effect, Result, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { decodePrevResult } from "./result.ts"
import { type CniRequest, type Plugin, requestedAddresses } from "./skel.ts"

/** The `containerscale` CNI plugin. Router mode for now; member mode comes with the tailscaled work. */

const PluginConfig = Schema.Struct({
  mode: Schema.optional(Schema.Literals(["router", "member"])),
  mtu: Schema.optional(Schema.Int.check(Schema.isBetween({ minimum: 576, maximum: 65535 })))
})

const decodePluginConfig = Schema.decodeUnknownEffect(PluginConfig, { errors: "all" })

const IN_PROCESS_IPAM = "containerscale-ipam"

const routerConfig = (request: Pick<CniRequest, "raw" | "config">) =>
  Effect.gen(function*() {
    const own = yield* decodePluginConfig(request.raw).pipe(
      Effect.mapError((e) => new InvalidNetworkConfig({ message: `invalid network configuration: ${describeIssue(e.issue)}` }))
    )
    if ((own.mode ?? "member") === "member") {
      return yield* new InvalidNetworkConfig({
        message: `member mode (the default) is not available in this version: set "mode": "router"`
      })
    }
    const section = request.config.ipam
    if (section === undefined) {
      return yield* new InvalidNetworkConfig({
        message: `router mode needs an "ipam" section, e.g. {"type": "containerscale-ipam", "ranges": [[{"subnet": "10.244.1.0/24"}]]}`
      })
    }
    if (section.type !== IN_PROCESS_IPAM) {
      return yield* new InvalidNetworkConfig({
        message: `ipam type "${section.type}" is not supported yet: use "${IN_PROCESS_IPAM}"`
      })
    }
    return { mtu: own.mtu ?? DEFAULT_MTU, section }
  })

const poolOf = (section: IpamSection) => {
  const resolved = resolvePool(section)
  return Result.isSuccess(resolved) ? Effect.succeed(resolved.success) : Effect.fail(resolved.failure)
}

const hostOf = (cidr: string) => cidr.split("/")[0]

export const containerscalePlugin: Plugin<Ipam | Netlink> = {
  add: Effect.fnUntraced(function*(request) {
    const { mtu, section } = yield* routerConfig(request)
    const pool = yield* poolOf(section)
    const a = yield* attachRouter({
      network: request.config.name,
      dataDir: section.dataDir,
      pool,
      containerId: request.containerId,
      ifname: request.ifname,
      netns: request.netns!,
      mtu,
      requested: requestedAddresses(request)
    })
    return {
      interfaces: [
        { name: a.host.name, ...(a.host.mac === undefined ? {} : { mac: a.host.mac }) },
        { name: a.container.name, ...(a.container.mac === undefined ? {} : { mac: a.container.mac }), sandbox: request.netns!, mtu }
      ],
      ips: a.leases.map((l) => ({ address: l.address, ...(l.gateway === undefined ? {} : { gateway: l.gateway }), interface: 1 })),
      routes: a.routes.map((r) => ({ ...r })),
      ...(request.config.dns === undefined ? {} : { dns: request.config.dns })
    }
  }),

  del: Effect.fnUntraced(function*(request) {
    yield* detachRouter({
      network: request.config.name,
      dataDir: request.config.ipam?.dataDir,
      containerId: request.containerId,
      ifname: request.ifname
    })
  }),

  check: Effect.fnUntraced(function*(request) {
    const { section } = yield* routerConfig(request)
    const prev = yield* decodePrevResult(request.raw.prevResult).pipe(
      Effect.mapError(() => new InvalidNetworkConfig({ message: `CHECK needs "prevResult", the result of the ADD it checks` }))
    )
    const netlink = yield* Netlink
    const who = `container ${request.containerId} (${request.ifname})`
    const host = hostInterfaceName(request.containerId, request.ifname)
    if ((yield* netlink.link(host)) === undefined) {
      return yield* new CheckFailed({ message: `the host end ${host} of ${who} is gone: delete and re-add the container` })
    }
    const inside = yield* netlink.link(request.ifname, request.netns)
    if (inside === undefined) {
      return yield* new CheckFailed({ message: `${request.ifname} is gone from ${request.netns} (${who}): delete and re-add the container` })
    }
    const have = new Set((yield* netlink.addresses(request.ifname, request.netns)).map((a) => `${a.ip}/${a.prefix}`))
    const missing = (prev.ips ?? []).filter((ip) => ip.interface === 1 && !have.has(ip.address)).map((ip) => ip.address)
    if (missing.length > 0) {
      return yield* new CheckFailed({ message: `${who} lost ${missing.join(", ")} on ${request.ifname}: delete and re-add the container` })
    }
    const pool = yield* poolOf(section)
    const leases = yield* (yield* Ipam).leases({
      network: request.config.name,
      dataDir: section.dataDir,
      pool,
      containerId: request.containerId,
      ifname: request.ifname
    })
    const held = new Set(leases.map((l) => l.ip))
    const unrecorded = (prev.ips ?? []).map((ip) => hostOf(ip.address)).filter((ip) => ip !== undefined && !held.has(ip))
    if (unrecorded.length > 0) {
      return yield* new CheckFailed({ message: `the IPAM store no longer records ${unrecorded.join(", ")} for ${who}: delete and re-add the container` })
    }
  }),

  gc: Effect.fnUntraced(function*(request) {
    if (request.valid === undefined) return
    const failures = yield* gcRouter({ network: request.config.name, dataDir: request.config.ipam?.dataDir, valid: request.valid })
    if (failures.length > 0) {
      return yield* new NotAvailable({
        message: `GC finished with ${failures.length} failure(s): ${failures.map((f) => f.message).join("; ")}`
      })
    }
  }),

  status: Effect.fnUntraced(function*(request) {
    const { section } = yield* routerConfig(request)
    yield* poolOf(section)
    const dir = path.resolve(section.dataDir ?? defaultIpamOptions.dataDir)
    yield* Effect.try({
      try: () => {
        fs.mkdirSync(dir, { recursive: true, mode: 0o755 })
        fs.accessSync(dir, fs.constants.W_OK)
      },
      catch: (e) =>
        new NotAvailable({ message: `the IPAM data directory ${dir} is not writable (${e instanceof Error ? e.message : String(e)})` })
    })
    yield* (yield* Netlink).links().pipe(
      Effect.mapError((e) => new NotAvailable({ message: `cannot use iproute2: ${e.message}` }))
    )
  })
}

import { type ContainerRoute, DEFAULT_ROUTES, Ip, type Lease, type Netlink, packageVersion, Router } from "@containerscale/core"
import { checkMemberNetwork, Member } from "@containerscale/core/member"
import { Effect, Result } from "effect"
import * as fs from "node:fs"
import { memberNetworkOf, netavarkSpelling, optionsOf, teardownOptionsOf } from "./options.ts"
import { type Call, InvalidRequest, type Network } from "./protocol.ts"

/**
 * The netavark plugin commands, over the core's workflows. `create` checks and completes a
 * network; `setup` wires one container (router mode: a veth pair through the node with the
 * addresses Podman's IPAM chose; member mode: the same, then the container joins the tailnet);
 * `teardown` undoes it.
 */

export const VERSION = packageVersion(import.meta.url)
export const API_VERSION = "1.0.0"

export type Env = Readonly<Record<string, string | undefined>>

export interface Io {
  readonly env: Env
  readonly warn: (message: string) => void
}

const fail = (message: string) => Effect.fail(new InvalidRequest({ message }))

interface SubnetInfo {
  readonly subnet: Ip.Subnet
  readonly text: string
  readonly gateway: string | undefined
}

const subnetsOf = (network: Network, where: string) =>
  Effect.forEach(network.subnets ?? [], (s, i) => {
    const parsed = Ip.parseSubnet(s.subnet)
    if (Result.isFailure(parsed)) return fail(`${where}: subnets[${i}]: ${parsed.failure}`)
    const gateway = s.gateway ?? undefined
    if (gateway !== undefined && Result.isFailure(Ip.parseAddress(gateway))) return fail(`${where}: subnets[${i}].gateway must be an IP address`)
    return Effect.succeed<SubnetInfo>({ subnet: parsed.success, text: s.subnet, gateway })
  })

export const info = () => ({ version: VERSION, api_version: API_VERSION })

/**
 * Checks a new network and completes its options (`mode`, `mtu`). Everything else comes back as it
 * came, `name`, `id` and `driver` byte-identical.
 */
export const create = (network: Network, json: Readonly<Record<string, unknown>>, io: Io) =>
  Effect.gen(function*() {
    const options = yield* optionsOf(network)
    if (options.mode === "member") {
      for (const warning of yield* checkMemberNetwork(options.member, io.env, netavarkSpelling)) io.warn(warning)
    }
    const subnets = yield* subnetsOf(network, "create")
    const ipamDriver = network.ipam_options?.["driver"]
    if (ipamDriver !== undefined && ipamDriver !== "host-local") {
      return yield* fail(
        `the ${options.mode} mode needs Podman's own address allocation (host-local), not the IPAM driver "${ipamDriver}": drop --ipam-driver`
      )
    }
    if (subnets.length === 0) {
      return yield* fail(`${options.mode} mode needs a subnet for the containers' addresses: add --subnet (such as --subnet 10.89.7.0/24)`)
    }
    return { ...json, options: { ...network.options, mode: options.mode, mtu: String(options.mtu) } }
  })

/** Podman's addresses as leases: each with the prefix and gateway of the subnet holding it. */
const leasesOf = (call: Call) =>
  Effect.gen(function*() {
    const subnets = yield* subnetsOf(call.network, "setup: network")
    const ips = call.network_options.static_ips ?? []
    if (ips.length === 0) {
      return yield* fail(
        `setup: Podman gave no address (network_options.static_ips is empty): the network needs a subnet and ` +
          `Podman's host-local IPAM; recreate it with --subnet`
      )
    }
    return yield* Effect.forEach(ips, (text) => {
      const address = Ip.parseAddress(text)
      if (Result.isFailure(address)) return fail(`setup: static_ips: ${address.failure}`)
      const index = subnets.findIndex((s) => s.subnet.family === address.success.family && Ip.contains(s.subnet, address.success))
      if (index < 0) return fail(`setup: the address ${text} is in none of the network's subnets (${subnets.map((s) => s.text).join(", ")})`)
      const s = subnets[index]!
      return Effect.succeed<Lease>({ family: address.success.family, ip: text, address: `${text}/${s.subnet.prefix}`, gateway: s.gateway, rangeSet: index })
    })
  })

/**
 * The container's routes: a default route, and the network's routes (`podman network create
 * --route`), all through the node, which routes them on: in router mode only the node is on-link.
 */
const routesOf = (network: Network, leases: ReadonlyArray<Lease>, warn: (message: string) => void): Array<ContainerRoute> => {
  const routes: Array<ContainerRoute> = [...DEFAULT_ROUTES]
  for (const r of network.routes ?? []) {
    if ((r.route_type ?? "unicast") !== "unicast") continue
    if (r.gateway != null && !leases.some((l) => l.gateway === r.gateway)) {
      warn(`the route to ${r.destination} goes through the node (${leases[0]?.gateway ?? "the gateway"}), not ${r.gateway}: only the node is on-link in router mode`)
    }
    routes.push({ dst: r.destination })
  }
  return routes
}

export interface NetAddress {
  readonly ipnet: string
  readonly gateway?: string
}
export interface StatusBlock {
  readonly dns_search_domains: ReadonlyArray<string>
  readonly dns_server_ips: ReadonlyArray<string>
  readonly interfaces: Record<string, { readonly mac_address: string; readonly subnets: ReadonlyArray<NetAddress> }>
}

const assertNetns = (netns: string, what: string) =>
  Effect.suspend(() => {
    let stat: fs.Stats
    try {
      stat = fs.statSync(netns)
    } catch (e) {
      return fail(`${what}: the network namespace ${netns} does not exist (${(e as NodeJS.ErrnoException).code})`)
    }
    return stat.isDirectory() ? fail(`${what}: ${netns} is a directory, not a network namespace`) : Effect.void
  })

const attachmentOf = (call: Call, netns: string) => ({
  runtime: "netavark" as const,
  network: call.network.name,
  containerId: call.container_id,
  ifname: call.network_options.interface_name,
  netns,
  name: call.container_name ?? undefined
})

export const setup = (call: Call, netns: string, io: Io): Effect.Effect<StatusBlock, unknown, Netlink | Member> =>
  Effect.gen(function*() {
    yield* assertNetns(netns, "setup")
    const options = yield* optionsOf(call.network)
    const leases = yield* leasesOf(call)
    if ((call.port_mappings ?? []).length > 0) {
      io.warn(`port mappings are not programmed for ${options.mode} mode networks (ignored): reach the container at its address`)
    }
    if (call.network_options.static_mac != null && call.network_options.static_mac !== "") {
      io.warn(`static_mac ${call.network_options.static_mac} is not supported (ignored)`)
    }
    const attachment = attachmentOf(call, netns)
    const wired = yield* Router.wire({ ...attachment, mtu: options.mtu, routes: routesOf(call.network, leases, io.warn) }, leases)
    const status: StatusBlock = {
      dns_search_domains: [],
      dns_server_ips: [],
      interfaces: {
        [attachment.ifname]: {
          mac_address: wired.container.mac ?? "",
          subnets: leases.map((l) => (l.gateway === undefined ? { ipnet: l.address } : { ipnet: l.address, gateway: l.gateway }))
        }
      }
    }
    if (options.mode === "router") return status
    const joined = yield* (yield* Member).join(memberNetworkOf(options, io.env), attachment).pipe(
      Effect.onError(() => Effect.ignore(Router.unwire(attachment)))
    )
    return {
      dns_search_domains: joined.dns?.search ?? [],
      dns_server_ips: joined.dns?.nameservers ?? [],
      interfaces: {
        ...status.interfaces,
        [joined.device?.name ?? "tailscale"]: { mac_address: joined.device?.mac ?? "", subnets: joined.addresses.map((ipnet) => ({ ipnet })) }
      }
    }
  })

/**
 * Undoes setup, whatever is left of it: the tailnet node by its record (found by container and
 * interface), the veth pair by its host end's name. The namespace may be gone already.
 */
export const teardown = (call: Call, netns: string, io: Io): Effect.Effect<void, unknown, Netlink | Member> =>
  Effect.gen(function*() {
    const options = yield* teardownOptionsOf(call.network, io.warn)
    const attachment = attachmentOf(call, netns)
    const failures: Array<string> = []
    if (options.mode === "member") {
      yield* (yield* Member).leave(memberNetworkOf(options, io.env), attachment).pipe(
        Effect.catch((e) => Effect.sync(() => failures.push(`leaving the tailnet: ${e.message}`)))
      )
    }
    yield* Router.unwire(attachment).pipe(Effect.catch((e) => Effect.sync(() => failures.push(`removing the veth pair: ${e.message}`))))
    if (failures.length > 0) return yield* fail(`teardown: ${failures.join("; ")}`)
  })

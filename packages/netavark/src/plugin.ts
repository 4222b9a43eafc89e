import {
  hostInterfaceName,
  Ip,
  type Lease,
  Netlink,
  unwireRouter,
  wireRouter,
  type ContainerRoute
} from "@containerscale/core"
import { Effect, Result } from "effect"
import * as fs from "node:fs"
import { authKeyText, type NetworkOptions, optionValues, parseNetworkOptions, PluginError, stateDirOf } from "./options.ts"

/**
 * The netavark plugin commands. `create` validates and completes a network; `setup` wires one
 * container (router mode: a veth pair through the node with the addresses Podman's IPAM chose;
 * member mode: the same, then a tailscaled in the container's namespace); `teardown` undoes it.
 */

export const VERSION = "0.1.0"
export const API_VERSION = "1.0.0"

export type Env = Readonly<Record<string, string | undefined>>

export interface Io {
  readonly env: Env
  readonly warn: (message: string) => void
}

type Json = Record<string, unknown>

const fail = (message: string): never => {
  throw new PluginError(message)
}

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v)

/** Parses stdin as one JSON object. */
export const parseInput = (text: string, what: string): Json => {
  if (text.trim() === "") return fail(`${what}: expected a JSON object on stdin, got nothing`)
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (e) {
    return fail(`${what}: stdin is not valid JSON: ${(e as Error).message}`)
  }
  if (!isObject(json)) return fail(`${what}: stdin must be a JSON object`)
  return json
}

const requireString = (o: Json, key: string, where: string): string => {
  const v = o[key]
  if (typeof v !== "string" || v === "") fail(`${where}: "${key}" must be a non-empty string`)
  return v as string
}

/** null and absent alike: netavark < 2.0 sends null for absent optional fields, 2.0 omits them. */
const optional = (o: Json, key: string): unknown => (o[key] === null ? undefined : o[key])

interface SubnetInfo {
  readonly subnet: Ip.Subnet
  readonly text: string
  readonly gateway: string | undefined
}

const subnetsOf = (network: Json, where: string): Array<SubnetInfo> => {
  const list = optional(network, "subnets")
  if (list === undefined) return []
  if (!Array.isArray(list)) return fail(`${where}: "subnets" must be a list`)
  return list.map((s, i) => {
    if (!isObject(s) || typeof s["subnet"] !== "string") return fail(`${where}: subnets[${i}] needs a "subnet" (CIDR)`)
    const parsed = Ip.parseSubnet(s["subnet"])
    if (Result.isFailure(parsed)) return fail(`${where}: subnets[${i}]: ${parsed.failure}`)
    const gw = optional(s, "gateway")
    if (gw !== undefined && (typeof gw !== "string" || Result.isFailure(Ip.parseAddress(gw)))) {
      return fail(`${where}: subnets[${i}].gateway must be an IP address`)
    }
    return { subnet: parsed.success, text: s["subnet"], gateway: gw as string | undefined }
  })
}

// ---------------------------------------------------------------------------------------------
// info, create

export const info = () => ({ version: VERSION, api_version: API_VERSION })

/**
 * Validates a new network and completes its options (`mode`, `mtu`). Everything else comes back
 * as it came, `name`, `id` and `driver` byte-identical.
 */
export const create = (input: Json, io: Io): Json => {
  for (const k of ["name", "id", "driver"]) requireString(input, k, "create")
  const options = parseNetworkOptions(optional(input, "options"), io.env, io.warn)
  const subnets = subnetsOf(input, "create")
  const ipam = optional(input, "ipam_options")
  const ipamDriver = isObject(ipam) && typeof ipam["driver"] === "string" ? ipam["driver"] : undefined
  if (ipamDriver !== undefined && ipamDriver !== "host-local") {
    fail(`the ${options.mode} mode needs Podman's own address allocation (host-local), not the IPAM driver "${ipamDriver}": drop --ipam-driver`)
  }
  if (subnets.length === 0) {
    fail(`${options.mode} mode needs a subnet for the containers' addresses: add --subnet (such as --subnet 10.89.7.0/24)`)
  }
  return {
    ...input,
    options: { ...(isObject(input["options"]) ? input["options"] : {}), mode: options.mode, mtu: String(options.mtu) }
  }
}

// ---------------------------------------------------------------------------------------------
// setup, teardown

export interface Call {
  readonly netns: string
  readonly containerId: string
  readonly containerName: string | undefined
  readonly network: Json
  readonly networkName: string
  readonly ifname: string
  readonly staticIps: ReadonlyArray<string>
  readonly portMappings: ReadonlyArray<unknown>
  readonly staticMac: string | undefined
}

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/

export const parseCall = (input: Json, netns: string, what: string): Call => {
  const containerId = requireString(input, "container_id", what)
  const name = optional(input, "container_name")
  const network = input["network"]
  if (!isObject(network)) return fail(`${what}: "network" must be the network's JSON object`)
  const networkName = requireString(network, "name", `${what}: network`)
  const opts = input["network_options"]
  if (!isObject(opts)) return fail(`${what}: "network_options" must be an object with "interface_name"`)
  const ifname = requireString(opts, "interface_name", `${what}: network_options`)
  if (!IFNAME.test(ifname)) fail(`${what}: interface_name "${ifname}" is not a valid interface name`)
  const ips = optional(opts, "static_ips") ?? []
  if (!Array.isArray(ips) || ips.some((ip) => typeof ip !== "string")) fail(`${what}: network_options.static_ips must be a list of addresses`)
  const ports = optional(input, "port_mappings") ?? []
  const mac = optional(opts, "static_mac")
  return {
    netns,
    containerId,
    containerName: typeof name === "string" && name !== "" ? name : undefined,
    network,
    networkName,
    ifname,
    staticIps: ips as Array<string>,
    portMappings: Array.isArray(ports) ? ports : [],
    staticMac: typeof mac === "string" && mac !== "" ? mac : undefined
  }
}

/** Podman's addresses as leases: each with the prefix and gateway of the subnet holding it. */
export const leasesOf = (call: Call): Array<Lease> => {
  const subnets = subnetsOf(call.network, "setup: network")
  if (call.staticIps.length === 0) {
    fail(
      `setup: Podman gave no address (network_options.static_ips is empty): the network needs a subnet and ` +
        `Podman's host-local IPAM; recreate it with --subnet`
    )
  }
  return call.staticIps.map((text) => {
    const address = Ip.parseAddress(text)
    if (Result.isFailure(address)) return fail(`setup: static_ips: ${address.failure}`)
    const index = subnets.findIndex((s) => s.subnet.family === address.success.family && Ip.contains(s.subnet, address.success))
    if (index < 0) return fail(`setup: the address ${text} is in none of the network's subnets (${subnets.map((s) => s.text).join(", ")})`)
    const s = subnets[index]!
    return {
      family: address.success.family,
      ip: text,
      address: `${text}/${s.subnet.prefix}`,
      gateway: s.gateway,
      rangeSet: index
    }
  })
}

/**
 * The container's routes: a default route, and the network's routes (`podman network create
 * --route`), all through the node, which routes them on: in router mode only the node is on-link.
 */
const routesOf = (network: Json, leases: ReadonlyArray<Lease>, warn: (message: string) => void): Array<ContainerRoute> => {
  const extra = optional(network, "routes")
  const routes: Array<ContainerRoute> = [{ dst: "0.0.0.0/0" }, { dst: "::/0" }]
  if (!Array.isArray(extra)) return routes
  for (const r of extra) {
    if (!isObject(r) || typeof r["destination"] !== "string") continue
    const type = optional(r, "route_type")
    if (type !== undefined && type !== "unicast") continue
    const gw = optional(r, "gateway")
    if (typeof gw === "string" && !leases.some((l) => l.gateway === gw)) {
      warn(`the route to ${r["destination"]} goes through the node (${leases[0]?.gateway ?? "the gateway"}), not ${gw}: only the node is on-link in router mode`)
    }
    routes.push({ dst: r["destination"] })
  }
  return routes
}

export interface NetAddress {
  readonly ipnet: string
  readonly gateway?: string
}
export interface StatusBlock {
  readonly dns_search_domains: Array<string>
  readonly dns_server_ips: Array<string>
  readonly interfaces: Record<string, { readonly mac_address: string; readonly subnets: Array<NetAddress> }>
}

const QUAD_100 = "100.100.100.100"

/** A locally administered MAC for the TUN device (it has none), stable per node address, as the CNI plugin reports it. */
const pseudoMac = (address: string) => {
  let h = 0x811c9dc5
  for (let i = 0; i < address.length; i++) h = Math.imul(h ^ address.charCodeAt(i), 0x01000193)
  const bytes = [0x02, 0x00, (h >>> 24) & 255, (h >>> 16) & 255, (h >>> 8) & 255, h & 255]
  return bytes.map((b) => b.toString(16).padStart(2, "0")).join(":")
}

const assertNetns = (netns: string, what: string) => {
  let stat: fs.Stats
  try {
    stat = fs.statSync(netns)
  } catch (e) {
    return fail(`${what}: the network namespace ${netns} does not exist (${(e as NodeJS.ErrnoException).code})`)
  }
  if (stat.isDirectory()) fail(`${what}: ${netns} is a directory, not a network namespace`)
}

/** The member-mode settings of a call, from the network's options (same names as the CNI config). */
const memberConfigOf = (options: NetworkOptions, authKey: string | undefined) => {
  const v = options.values
  return {
    hostname: (v.hostname ?? "{name}").replaceAll("{name}", "{pod}"),
    tags: v.tags?.split(",").map((t) => t.trim()).filter((t) => t !== ""),
    loginServer: v.login_server,
    userspace: v.userspace === undefined ? undefined : v.userspace === "true",
    magicDns: v.magic_dns === undefined ? undefined : v.magic_dns === "true",
    tailscaledPath: v.tailscaled_path,
    stateDir: options.stateDir,
    timeoutSeconds: options.timeoutSeconds,
    ...(authKey === undefined ? {} : { authKey })
  }
}

export const setup = (call: Call, io: Io) =>
  Effect.gen(function*() {
    assertNetns(call.netns, "setup")
    const options = parseNetworkOptions(call.network["options"], io.env, io.warn)
    const leases = leasesOf(call)
    if (call.portMappings.length > 0) {
      io.warn(`port mappings are not programmed for ${options.mode} mode networks (ignored): reach the container at its address`)
    }
    if (call.staticMac !== undefined) io.warn(`static_mac ${call.staticMac} is not supported (ignored)`)
    const wired = yield* wireRouter({
      network: call.networkName,
      containerId: call.containerId,
      ifname: call.ifname,
      netns: call.netns,
      mtu: options.mtu,
      routes: routesOf(call.network, leases, io.warn)
    }, leases)
    const status: StatusBlock = {
      dns_search_domains: [],
      dns_server_ips: [],
      interfaces: {
        [call.ifname]: {
          mac_address: wired.container.mac ?? "",
          subnets: leases.map((l) => (l.gateway === undefined ? { ipnet: l.address } : { ipnet: l.address, gateway: l.gateway }))
        }
      }
    }
    if (options.mode === "router") return status
    return yield* joinAsMember(call, options, io, status).pipe(
      Effect.onError(() => Effect.ignore(unwireRouter({ containerId: call.containerId, ifname: call.ifname })))
    )
  })

/** Member mode: a tailscaled in the container's namespace, up and Running before setup returns. */
const joinAsMember = (call: Call, options: NetworkOptions, io: Io, status: StatusBlock) =>
  Effect.gen(function*() {
    const { joinMember, resolveMemberSettings } = yield* Effect.promise(() => import("@containerscale/core/member"))
    const netlink = yield* Netlink
    if (options.values.userspace !== "true") {
      // tailscaled puts its fd7a:… address on tailscale0: IPv6 must be on in the namespace
      for (const k of ["net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"]) {
        yield* Effect.ignore(netlink.setSysctl(k, "0", call.netns))
      }
    }
    const key = authKeyText(options.values, io.env)
    const settings = yield* resolveMemberSettings(
      memberConfigOf(options, key),
      call.networkName,
      { containerId: call.containerId, podName: call.containerName },
      {},
      { withAuthKey: true }
    )
    const member = yield* joinMember({
      stateDir: settings.memberRoot,
      network: call.networkName,
      containerId: call.containerId,
      ifname: call.ifname,
      netns: call.netns,
      identity: settings.identity,
      persistent: false,
      tailscaled: settings.tailscaled,
      userspace: settings.userspace,
      extraFlags: settings.extraFlags,
      prefs: settings.prefs,
      authKey: settings.authKey,
      timeout: `${settings.timeoutSeconds} seconds`
    })
    const tailnet = member.addresses.map((a) => ({ ipnet: `${a}/${a.includes(":") ? 128 : 32}` }))
    const name = member.tun ?? "tailscale"
    const magic = settings.magicDns && member.magicDnsSuffix !== undefined
    const block: StatusBlock = {
      dns_search_domains: magic ? [member.magicDnsSuffix!] : [],
      dns_server_ips: magic ? [QUAD_100] : [],
      interfaces: {
        ...status.interfaces,
        [name]: { mac_address: member.addresses[0] === undefined ? "" : pseudoMac(member.addresses[0]), subnets: tailnet }
      }
    }
    return block
  })

/**
 * Undoes setup, whatever is left of it: the tailscaled by its record (found by container and
 * interface), the veth pair by its host end's name. The namespace may be gone already.
 */
export const teardown = (call: Call, io: Io) =>
  Effect.gen(function*() {
    let values: ReturnType<typeof optionValues> = {}
    try {
      values = optionValues(call.network["options"])
    } catch (e) {
      io.warn(`teardown: ignoring the network's options: ${(e as Error).message}`)
    }
    const failures: Array<string> = []
    const { findMember, leaveMember } = yield* Effect.promise(() => import("@containerscale/core/member"))
    const memberRoot = `${stateDirOf(values, io.env)}/member`
    const found = findMember(memberRoot, call.containerId, call.ifname)
    if (found._tag === "Some" && found.value.network === call.networkName) {
      yield* leaveMember({ stateDir: memberRoot, identity: found.value.identity, keepState: found.value.persistent }).pipe(
        Effect.catch((e) => Effect.sync(() => failures.push(`leaving the tailnet: ${e.message}`)))
      )
    }
    yield* unwireRouter({ containerId: call.containerId, ifname: call.ifname }).pipe(
      Effect.catch((e) =>
        Effect.sync(() => failures.push(`removing ${hostInterfaceName(call.containerId, call.ifname)}: ${e.message}`))
      )
    )
    if (failures.length > 0) fail(`teardown: ${failures.join("; ")}`)
  })

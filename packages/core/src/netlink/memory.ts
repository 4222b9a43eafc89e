import { Effect, Layer, Result } from "effect"
import { NetlinkFailure } from "../errors.ts"
import { formatAddress, parseAddress } from "../ip.ts"
import { renderStep } from "./iproute2.ts"
import { type InterfaceAddress, type Link, Netlink, type Route, type Step } from "./Netlink.ts"

/**
 * Netlink in memory, for unit tests of code above it: network namespaces keyed by path (the
 * caller's own under `HOST_NETNS`), each with links, addresses, routes and sysctls. It fails as
 * `layerIproute2` does (iproute2's and the kernel's reasons, the failing step named, `exists` on
 * EEXIST, `ip -batch` keeping the steps before a failure and running none after it) and adds what
 * the kernel adds by itself: loopback addresses once `lo` is up, the prefix routes of addresses on
 * up links, and IPv6 link-local addresses and routes once both ends of a veth pair are up. Unlike
 * iproute2 it takes any name (no shell-safety refusals) and ignores the `lo` device's protection.
 */

export const HOST_NETNS = "host"

/** what `/proc/self/ns/net` names: the namespace the `ip` process runs in */
const OWN_NETNS = "/proc/self/ns/net"

export type MemoryAddress = InterfaceAddress & { readonly flags: ReadonlyArray<string> }
export type MemoryRoute = Route & { readonly family: 4 | 6 }

export interface NamespaceView {
  readonly links: ReadonlyArray<Link & { readonly peer: string | undefined; readonly addresses: ReadonlyArray<MemoryAddress> }>
  /** both families, each in the kernel's order */
  readonly routes: ReadonlyArray<MemoryRoute>
  readonly sysctls: ReadonlyMap<string, string>
}

type Cidr = { readonly family: 4 | 6; readonly value: bigint; readonly prefix: number }

type Device = { -readonly [K in keyof Link]: Link[K] } & {
  readonly ns: Namespace
  peer: Device | undefined
  readonly addresses: Array<MemoryAddress & { readonly cidr: Cidr }>
}

interface Namespace {
  nextIndex: number
  readonly devices: Array<Device>
  routes: Array<{ readonly cidr: Cidr; readonly gateway: string | undefined; readonly dev: Device; readonly scope: string | undefined }>
  readonly sysctls: Map<string, string>
}

/** A step refused inside a batch, with iproute2's or the kernel's reason; `parse`: ip stops reading the batch. */
class Refused {
  constructor(readonly reason: string, readonly parse = false) {}
}
const refuse = (reason: string, parse = false): never => {
  throw new Refused(reason, parse)
}
/** A failure outside a batch, thrown inside `sync`. */
const failure = (message: string): never => {
  throw new NetlinkFailure({ message })
}
/** Runs the model's synchronous code, failing with the `NetlinkFailure` it throws. */
const sync = <A>(f: () => A): Effect.Effect<A, NetlinkFailure> =>
  Effect.catch(Effect.try({ try: f, catch: (e) => e }), (e) => (e instanceof NetlinkFailure ? Effect.fail(e) : Effect.die(e)))

const width = (family: 4 | 6) => (family === 4 ? 32 : 128)
const hostBits = (c: Cidr) => c.value & ((1n << BigInt(width(c.family) - c.prefix)) - 1n)
const last = (c: Cidr) => c.value | ((1n << BigInt(width(c.family) - c.prefix)) - 1n)
const within = (net: Cidr, ip: Cidr) => net.family === ip.family && ip.value >= net.value && ip.value <= last(net)
const same = (a: Cidr, b: Cidr) => a.family === b.family && a.value === b.value && a.prefix === b.prefix

/** "10.0.0.1", "10.0.0.0/24", "default" (of `family`); undefined when it does not parse */
const parseCidr = (text: string, family: 4 | 6): Cidr | undefined => {
  if (text === "default") return { family, value: 0n, prefix: 0 }
  const [ip = "", len] = text.split("/")
  const parsed = parseAddress(ip)
  if (Result.isFailure(parsed)) return undefined
  const { family: f, value } = parsed.success
  const prefix = len === undefined ? width(f) : Number(len)
  return Number.isInteger(prefix) && prefix >= 0 && prefix <= width(f) ? { family: f, value, prefix } : undefined
}

/** as `ip -json route` prints a destination */
const showDst = (c: Cidr) =>
  c.prefix === 0 ? "default" : `${formatAddress(c.family, c.value)}${c.prefix === width(c.family) ? "" : `/${c.prefix}`}`

/** IPv4's trie lists by address, longer prefixes first; IPv6's tree walk lists a prefix after those inside it. */
const kernelOrder = (a: Cidr, b: Cidr) => {
  const [x, y] = a.family === 4 ? [a.value, b.value] : [last(a), last(b)]
  return a.family - b.family || (x < y ? -1 : x > y ? 1 : b.prefix - a.prefix)
}

const toLink = (d: Device): Link => ({ name: d.name, index: d.index, mtu: d.mtu, mac: d.mac, up: d.up, type: d.type, alias: d.alias })

/** the EUI-64 link-local address of a MAC */
const linkLocal = (mac: string): Cidr => {
  const b = mac.split(":").map((h) => parseInt(h, 16))
  const eui = [b[0]! ^ 2, b[1]!, b[2]!, 0xff, 0xfe, b[3]!, b[4]!, b[5]!].reduce((v, x) => (v << 8n) | BigInt(x), 0n)
  return { family: 6, value: (0xfe80n << 112n) | eui, prefix: 64 }
}

const address = (cidr: Cidr, scope: string, flags: ReadonlyArray<string> = []) =>
  ({ family: cidr.family, ip: formatAddress(cidr.family, cidr.value), prefix: cidr.prefix, scope, flags, cidr })

const LOOPBACK = [address({ family: 4, value: 0x7f000001n, prefix: 8 }, "host"), address({ family: 6, value: 1n, prefix: 128 }, "host")]

/** the link's addresses, IPv4 first, with those the kernel adds */
const addressesOf = (d: Device) =>
  [
    ...(d.type === "loopback" && d.up ? LOOPBACK : []),
    ...d.addresses,
    ...(d.up && d.peer?.up && d.mac !== undefined ? [address(linkLocal(d.mac), "link")] : [])
  ].sort((a, b) => a.family - b.family)

/** the namespace's routes, with the prefix routes of the addresses on up links */
const routesOf = (ns: Namespace) =>
  [
    ...ns.routes,
    ...ns.devices.filter((d) => d.up && d.type !== "loopback").flatMap((dev) =>
      addressesOf(dev).filter((a) => a.prefix < width(a.family) && !a.flags.includes("noprefixroute"))
        .map((a) => ({ cidr: { ...a.cidr, value: a.cidr.value - hostBits(a.cidr) }, gateway: undefined, dev, scope: a.family === 4 ? "link" : undefined }))
    )
  ].sort((a, b) => kernelOrder(a.cidr, b.cidr))

const showRoutes = (ns: Namespace): Array<MemoryRoute> =>
  routesOf(ns).map((r) => ({ family: r.cidr.family, dst: showDst(r.cidr), gateway: r.gateway, dev: r.dev.name, scope: r.scope }))

const where = (netns: string | undefined) => (netns === undefined ? "" : ` in ${netns}`)

export const makeNetlinkMemory = () => {
  const namespaces = new Map<string, Namespace>()
  let macs = 0

  const addDevice = (ns: Namespace, name: string, kind: Pick<Device, "type" | "mtu" | "mac">) => {
    const device: Device = { name, index: ns.nextIndex++, up: false, alias: undefined, ns, peer: undefined, addresses: [], ...kind }
    ns.devices.push(device)
    return device
  }
  const newNamespace = (loUp: boolean) => {
    const ns: Namespace = { nextIndex: 1, devices: [], routes: [], sysctls: new Map() }
    addDevice(ns, "lo", { type: "loopback", mtu: 65536, mac: "00:00:00:00:00:00" }).up = loUp
    return ns
  }
  /** locally administered, unicast, from a counter */
  const nextMac = (n = ++macs) => `02:00:00:${[n >> 16, n >> 8, n].map((x) => (x & 255).toString(16).padStart(2, "0")).join(":")}`

  const find = (ns: Namespace, name: string) => ns.devices.find((d) => d.name === name)
  const device = (ns: Namespace, name: string) => find(ns, name) ?? refuse(`Cannot find device "${name}"`)

  /** removes the link, and the other end of a veth pair, with their routes and sysctls */
  const remove = (target: Device) => {
    for (const d of target.peer === undefined ? [target] : [target, target.peer]) {
      d.ns.devices.splice(d.ns.devices.indexOf(d), 1)
      d.ns.routes = d.ns.routes.filter((r) => r.dev !== d)
      for (const key of d.ns.sysctls.keys()) if (/^net\.ipv[46]\.conf\./.test(key) && key.split(".")[3] === d.name) d.ns.sysctls.delete(key)
    }
  }

  /** the namespace, or what `nsenter --net=PATH` says when PATH is not one */
  const enter = (netns: string | undefined, failed: string) =>
    namespaces.get(netns === undefined || netns === OWN_NETNS ? HOST_NETNS : netns) ??
      failure(`${failed}: nsenter: cannot open ${netns}: No such file or directory`)

  const runStep = (ns: Namespace, step: Step): Link | undefined => {
    switch (step.op) {
      case "veth": {
        const peerNs = step.peerNetns === OWN_NETNS ? ns : namespaces.get(step.peerNetns)
        if (peerNs === undefined) return refuse(`Error: argument "${step.peerNetns}" is wrong: Invalid "netns" value`, true)
        if (step.name.length > 15 || step.peerName.length > 15) refuse("Error: Attribute failed policy validation.")
        const taken = find(ns, step.name) || find(peerNs, step.peerName) || (ns === peerNs && step.name === step.peerName)
        if (taken) refuse("RTNETLINK answers: File exists")
        const kind = { type: "ether", mtu: step.mtu ?? 1500 }
        const peer = addDevice(peerNs, step.peerName, { ...kind, mac: nextMac() }) // the kernel makes the peer first
        peer.peer = addDevice(ns, step.name, { ...kind, mac: nextMac() })
        peer.peer.peer = peer
        return undefined
      }
      case "show":
        return toLink(find(ns, step.dev) ?? refuse(`Device "${step.dev}" does not exist.`))
      case "up":
        return void (device(ns, step.dev).up = true)
      case "mtu":
        return void (device(ns, step.dev).mtu = step.mtu)
      case "alias":
        return void (device(ns, step.dev).alias = step.alias)
      case "delete":
        return void remove(device(ns, step.dev))
      case "address": {
        const cidr = parseCidr(step.cidr, 4) ?? refuse(`Error: inet prefix is expected rather than "${step.cidr}".`)
        const d = device(ns, step.dev)
        if (d.addresses.some((a) => same(a.cidr, cidr))) refuse(`Error: ipv${cidr.family}: ${cidr.family === 4 ? "A" : "a"}ddress already assigned.`)
        return void d.addresses.push(address(cidr, "global", step.flags ?? []))
      }
      case "route": {
        const via = step.via === undefined ? undefined : parseCidr(step.via, 4)
        const cidr = parseCidr(step.dst, via?.family ?? 4) ?? refuse(`Error: inet prefix is expected rather than "${step.dst}".`)
        if (hostBits(cidr) !== 0n) refuse("Error: Invalid prefix for given prefix length.")
        const dev = device(ns, step.dev)
        if (!dev.up) refuse(cidr.family === 4 ? "Error: Device for nexthop is not up." : "Error: Nexthop device is not up.")
        const routes = routesOf(ns)
        if (via !== undefined && !routes.some((r) => r.dev === dev && r.gateway === undefined && within(r.cidr, via))) {
          refuse(cidr.family === 4 ? "Error: Nexthop has invalid gateway." : "RTNETLINK answers: No route to host")
        }
        if (routes.some((r) => same(r.cidr, cidr))) refuse("RTNETLINK answers: File exists")
        const scope = cidr.family === 6 ? undefined : step.scope ?? (via === undefined ? "link" : undefined)
        return void ns.routes.push({ cidr, gateway: via && formatAddress(via.family, via.value), dev, scope })
      }
    }
  }

  const apply = (steps: ReadonlyArray<Step>, netns?: string) =>
    sync(() => {
      const ns = steps.length === 0 ? undefined : enter(netns, `ip -batch${where(netns)} failed`)
      return steps.flatMap((step, i) => {
        try {
          return runStep(ns!, step) ?? []
        } catch (e) {
          if (!(e instanceof Refused)) throw e
          throw new NetlinkFailure({
            message: e.parse
              ? `ip -batch${where(netns)} failed: ${e.reason}`
              : `step ${i + 1} of ${steps.length}${where(netns)} failed: "ip ${renderStep(step)}": ${e.reason}`,
            failedOp: e.parse ? undefined : step.op,
            exists: /File exists/.test(e.reason)
          })
        }
      })
    })

  const link = (name: string, netns?: string) =>
    sync(() => {
      const d = find(enter(netns, `ip link show dev ${name}${where(netns)} failed`), name)
      return d && toLink(d)
    })

  const service = Netlink.of({
    ready: Effect.void,
    links: (netns) => sync(() => enter(netns, `ip link show${where(netns)} failed`).devices.map(toLink)),
    link,
    addresses: (dev, netns) =>
      sync(() => {
        const failed = `ip address show dev ${dev}${where(netns)} failed`
        const d = find(enter(netns, failed), dev) ?? failure(`${failed}: Device "${dev}" does not exist.`)
        return addressesOf(d).map(({ family, ip, prefix, scope }): InterfaceAddress => ({ family, ip, prefix, scope }))
      }),
    routes: (family, netns) =>
      sync(() =>
        showRoutes(enter(netns, `ip -${family} route show${where(netns)} failed`)).filter((r) => r.family === family)
          .map(({ family: _, ...route }): Route => route)
      ),
    apply,
    createVeth: ({ netns, ...veth }) =>
      Effect.gen(function*() {
        const [host] = yield* apply([{ op: "veth", ...veth }, { op: "show", dev: veth.name }], netns)
        const peer = yield* link(veth.peerName, veth.peerNetns) // where iproute2 looks: /proc/self/ns/net is the caller's
        const missing = `link ${veth.peerName}${where(veth.peerNetns)} is missing right after it was created`
        return { host: host!, peer: peer ?? (yield* sync(() => failure(missing))) }
      }),
    deleteLink: (name, netns) =>
      sync(() => {
        const d = find(enter(netns, `cannot delete link ${name}${where(netns)}`), name)
        if (d !== undefined) remove(d)
        return d !== undefined
      }),
    createTun: (name, netns) =>
      sync(() => {
        const failed = `cannot create TUN device ${name}${where(netns)}`
        const ns = enter(netns, failed)
        if (find(ns, name) !== undefined) failure(`${failed}: ioctl(TUNSETIFF): Device or resource busy`)
        return toLink(addDevice(ns, name, { type: "none", mtu: 1500, mac: undefined }))
      }),
    setSysctl: (key, value, netns) =>
      sync(() => {
        const failed = `cannot set ${key}=${value}${where(netns)}`
        const ns = enter(netns, failed)
        const dev = /^net\.ipv[46]\.conf\.([^.]+)\./.exec(key)?.[1]
        if (dev !== undefined && dev !== "all" && dev !== "default" && find(ns, dev) === undefined) {
          failure(`${failed}: cannot stat /proc/sys/${key.replaceAll(".", "/")}: No such file or directory`)
        }
        ns.sysctls.set(key, value)
      })
  })

  namespaces.set(HOST_NETNS, newNamespace(true))
  return {
    layer: Layer.succeed(Netlink, service) as Layer.Layer<Netlink>,
    /** a snapshot of the model, per namespace path (`HOST_NETNS` for the caller's own, whose `lo` is up) */
    get namespaces(): ReadonlyMap<string, NamespaceView> {
      return new Map([...namespaces].map(([key, ns]): [string, NamespaceView] => [key, {
        links: ns.devices.map((d) => ({ ...toLink(d), peer: d.peer?.name, addresses: addressesOf(d).map(({ cidr: _, ...a }) => a) })),
        routes: showRoutes(ns),
        sysctls: new Map(ns.sysctls)
      }]))
    },
    /** as `ip netns add`: a namespace with only `lo`, down */
    addNamespace: (path: string): void => {
      if (!namespaces.has(path)) namespaces.set(path, newNamespace(false))
    },
    /** the namespace goes away and its links with it, veth peers elsewhere included */
    removeNamespace: (path: string): void => {
      const ns = namespaces.get(path)
      if (ns === undefined || path === HOST_NETNS) return
      while (ns.devices.length > 0) remove(ns.devices[0]!)
      namespaces.delete(path)
    }
  }
}

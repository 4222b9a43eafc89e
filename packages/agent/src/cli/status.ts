import { hostInterfaceName, Ipam, memberRoot, Netlink } from "@containerscale/core"
import { netnsGone } from "@containerscale/core/gc"
import { listMembers, LocalApi, memberPaths } from "@containerscale/core/member"
import { Effect, Result } from "effect"
import { type GlobalOptions } from "./globals.ts"
import { mergePeerRoutes, peerRouteState, readPeerRoutes } from "../peerRoutes.ts"
import { ipamDataDir, memberStateDirs, ourNetworks, poolOfSection } from "./networks.ts"
import { table } from "./table.ts"

/** `status`: what containerscale does on this node, read from the CNI config, the stores and the daemons. */

export interface RangeStatus {
  readonly family: 4 | 6
  readonly ranges: ReadonlyArray<string>
  readonly size: string
  readonly used: number
  /** used / size, in percent with one decimal */
  readonly utilisation: number
}

export interface AllocationStatus {
  readonly containerId: string
  readonly ifname: string
  readonly ip: string
  /** router mode: the host end of the veth pair, and whether it is on the node */
  readonly hostInterface?: string | undefined
  readonly hostInterfacePresent?: boolean | undefined
}

export interface NetworkStatus {
  readonly name: string
  readonly file: string
  readonly mode: "router" | "member" | "ipam"
  readonly managed: boolean
  readonly plugins: ReadonlyArray<string>
  readonly dataDir?: string | undefined
  readonly pool: ReadonlyArray<RangeStatus>
  readonly allocations: ReadonlyArray<AllocationStatus>
  readonly error?: string | undefined
}

export interface MemberStatus {
  readonly network: string
  readonly identity: string
  readonly containerId: string
  readonly ifname: string
  readonly netns: string
  readonly netnsPresent: boolean
  readonly persistent: boolean
  readonly running: boolean
  readonly backendState?: string | undefined
  readonly addresses: ReadonlyArray<string>
  readonly dnsName?: string | undefined
  readonly error?: string | undefined
}

export interface NodeStatus {
  readonly socket: string
  readonly reachable: boolean
  readonly backendState?: string | undefined
  readonly version?: string | undefined
  readonly addresses: ReadonlyArray<string>
  readonly advertisedRoutes: ReadonlyArray<string>
  /** `Self.PrimaryRoutes`: the routes this node serves, i.e. approved by the control plane */
  readonly servedRoutes: ReadonlyArray<string>
  readonly error?: string | undefined
}

/** Routes other nodes serve (their pod CIDRs, in a cluster), and those that the agent saw go. */
export interface PeerRouteStatus {
  readonly node: string
  readonly routes: ReadonlyArray<string>
  readonly state: string
}

export interface Status {
  readonly cniConfDir: string
  readonly stateDir: string
  readonly networks: ReadonlyArray<NetworkStatus>
  readonly members: ReadonlyArray<MemberStatus>
  readonly tailscaled: NodeStatus
  readonly peerRoutes: ReadonlyArray<PeerRouteStatus>
}

const percent = (used: number, size: bigint) => (size === 0n ? 0 : Math.round((used / Number(size)) * 1000) / 10)

export const collectStatus = Effect.fnUntraced(function*(g: GlobalOptions) {
  const ipam = yield* Ipam
  const netlink = yield* Netlink
  const ours = ourNetworks(g.cniConfDir)
  const present = yield* netlink.links().pipe(
    Effect.map((ls) => new Set(ls.map((l) => l.name))),
    Effect.orElseSucceed(() => undefined)
  )
  const networks: Array<NetworkStatus> = []
  yield* Effect.logDebug("networks found", { cniConfDir: g.cniConfDir, networks: ours.map((n) => ({ name: n.name, mode: n.mode, file: n.file })) })
  for (const n of ours) {
    const base = { name: n.name, file: n.file, mode: n.mode, managed: n.managed, plugins: n.plugins.map((p) => p.type) }
    if (n.ipam === undefined) {
      const delegated = n.plugins.map((p) => p["ipam"]).find((i): i is { type: string } => typeof (i as any)?.type === "string")
      networks.push({ ...base, pool: [], allocations: [], error: delegated === undefined ? undefined : `addresses from ${delegated.type}, not containerscale-ipam` })
      continue
    }
    const dataDir = ipamDataDir(n.ipam.section)
    const pool = poolOfSection(n.ipam.section)
    if (Result.isFailure(pool)) {
      networks.push({ ...base, dataDir, pool: [], allocations: [], error: pool.failure })
      continue
    }
    const router = n.mode === "router" && n.ipam.plugin === "containerscale"
    const usage = yield* Effect.result(ipam.usage({ network: n.name, dataDir, pool: pool.success }))
    if (Result.isFailure(usage)) {
      networks.push({ ...base, dataDir, pool: [], allocations: [], error: usage.failure.message })
      continue
    }
    networks.push({
      ...base,
      dataDir,
      pool: usage.success.map((u) => ({
        family: u.family,
        ranges: u.ranges,
        size: u.size.toString(),
        used: u.used,
        utilisation: percent(u.used, u.size)
      })),
      allocations: usage.success.flatMap((u) =>
        u.allocations.map((a): AllocationStatus => {
          if (!router) return a
          const host = hostInterfaceName(a.containerId, a.ifname)
          return { ...a, hostInterface: host, hostInterfacePresent: present === undefined ? undefined : present.has(host) }
        })
      )
    })
  }

  const members: Array<MemberStatus> = []
  for (const dir of memberStateDirs(g.stateDir, ours)) {
    const root = memberRoot(dir)
    for (const m of listMembers(root)) {
      const base = {
        network: m.network,
        identity: m.identity,
        containerId: m.containerId,
        ifname: m.ifname,
        netns: m.netns,
        netnsPresent: !netnsGone(m.netns),
        persistent: m.persistent,
        running: m.running
      }
      if (!m.running) {
        members.push({ ...base, addresses: [] })
        continue
      }
      const answer = yield* Effect.result((yield* LocalApi).client({ socket: memberPaths(root, m.identity).socket, timeout: "2 seconds" }).status({ peers: false }))
      members.push(
        Result.isSuccess(answer)
          ? {
            ...base,
            backendState: answer.success.BackendState,
            addresses: answer.success.Self.TailscaleIPs ?? answer.success.TailscaleIPs ?? [],
            dnsName: answer.success.Self.DNSName.replace(/\.$/, "") || undefined
          }
          : { ...base, addresses: [], error: answer.failure.message }
      )
    }
  }

  const api = (yield* LocalApi).client({ socket: g.tailscaledSocket, timeout: "3 seconds" })
  const node = yield* Effect.result(Effect.all([api.status(), api.prefs()]))
  yield* Effect.logDebug("the node's tailscaled", {
    socket: g.tailscaledSocket,
    ...(Result.isSuccess(node) ? { state: node.success[0].BackendState } : { error: node.failure.message })
  })
  const tailscaled: NodeStatus = Result.isSuccess(node)
    ? {
      socket: g.tailscaledSocket,
      reachable: true,
      backendState: node.success[0].BackendState,
      version: node.success[0].Version,
      addresses: node.success[0].Self.TailscaleIPs ?? node.success[0].TailscaleIPs ?? [],
      advertisedRoutes: node.success[1].AdvertiseRoutes ?? [],
      servedRoutes: node.success[0].Self.PrimaryRoutes ?? []
    }
    : { socket: g.tailscaledSocket, reachable: false, addresses: [], advertisedRoutes: [], servedRoutes: [], error: node.failure.message }

  const peers = Result.isSuccess(node) ? Object.values(node.success[0].Peer ?? {}) : []
  const peerRoutes = mergePeerRoutes(readPeerRoutes(g.stateDir), peers, new Date())
    .map((p) => ({ node: p.node, routes: p.routes, state: peerRouteState(p) }))

  return { cniConfDir: g.cniConfDir, stateDir: g.stateDir, networks, members, tailscaled, peerRoutes } satisfies Status
})

const short = (id: string) => (id.length > 16 ? id.slice(0, 12) : id)
const list = (xs: ReadonlyArray<string>) => (xs.length === 0 ? "-" : xs.join(","))

export const renderStatus = (s: Status): string => {
  const out: Array<string> = []
  out.push(`Networks (${s.cniConfDir})`)
  if (s.networks.length === 0) out.push("  none: no network names containerscale or containerscale-ipam")
  else {
    out.push(table(
      ["NETWORK", "MODE", "POOL", "USED", "SIZE", "UTIL", "FILE"],
      s.networks.flatMap((n) =>
        n.pool.length === 0
          ? [[n.name, n.mode, n.error ?? "-", "-", "-", "-", n.file]]
          : n.pool.map((p) => [n.name, n.mode, p.ranges.join(","), String(p.used), p.size, `${p.utilisation}%`, n.file])
      ),
      "  "
    ))
    const allocations = s.networks.flatMap((n) => n.allocations.map((a) => ({ ...a, network: n.name })))
    if (allocations.length > 0) {
      out.push("", "Allocations")
      out.push(table(
        ["NETWORK", "CONTAINER", "IFNAME", "ADDRESS", "HOST LINK"],
        allocations.map((a) => [
          a.network,
          short(a.containerId),
          a.ifname,
          a.ip,
          a.hostInterface === undefined ? "-" : `${a.hostInterface}${a.hostInterfacePresent === false ? " (missing: run gc)" : ""}`
        ]),
        "  "
      ))
    }
  }
  out.push("", `Members (${s.stateDir})`)
  if (s.members.length === 0) out.push("  none")
  else {
    out.push(table(
      ["NETWORK", "CONTAINER", "IDENTITY", "STATE", "ADDRESSES", "DAEMON", "NETNS"],
      s.members.map((m) => [
        m.network,
        short(m.containerId),
        `${m.identity}${m.persistent ? " (persistent)" : ""}`,
        m.backendState ?? (m.error === undefined ? "-" : `error: ${m.error}`),
        list(m.addresses),
        m.running ? "running" : "stopped",
        m.netnsPresent ? "present" : "gone (run gc)"
      ]),
      "  "
    ))
  }
  out.push("", `Node tailscaled (${s.tailscaled.socket})`)
  const t = s.tailscaled
  if (!t.reachable) out.push(`  not reachable: ${t.error ?? "unknown error"}`)
  else {
    out.push(table(
      ["STATE", "ADDRESSES", "ADVERTISED ROUTES", "SERVED ROUTES (approved)"],
      [[t.backendState ?? "-", list(t.addresses), list(t.advertisedRoutes), list(t.servedRoutes)]],
      "  "
    ))
  }
  if (s.peerRoutes.length > 0) {
    out.push("", "Routes of other nodes")
    out.push(table(["ROUTES", "NODE", "STATE"], s.peerRoutes.map((p) => [list(p.routes), p.node, p.state]), "  "))
  }
  return out.join("\n")
}

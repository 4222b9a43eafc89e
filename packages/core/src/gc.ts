import { Effect, Schema } from "effect"
import { runProcess } from "#run"
import * as fs from "node:fs"
import { Ipam } from "./ipam/Ipam.ts"
import type { LocalApi } from "./tailscale/LocalApi.ts"
import { Netlink } from "./netlink/Netlink.ts"
import type { Pool } from "./pool.ts"
import { hostInterfaceName, parseHostInterfaceAlias } from "./router/attach.ts"
import { memberRoot } from "./state.ts"
import { leaveMember, listMembers, sweepMemberRoot } from "./tailscale/tailscaled.ts"

/**
 * Node garbage collection, shared by `containerscalectl gc` and the agent's periodic GC. It finds
 * what a container left behind when its runtime never sent DEL (a crash, a killed runtime, a
 * namespace deleted by hand) and removes it:
 *
 * - router mode: an address in our IPAM store whose host interface (`hostInterfaceName`) is no
 *   longer on the node. The kernel deletes a veth pair with the container's namespace, so a missing
 *   host end means the container is gone. ADD allocates before it makes the pair, so a missing
 *   host end is seen twice, `graceMs` apart, before its address is released.
 * - router mode: a host `cs*` link with our alias (`containerscale:<runtime>:<network>:...`) that has no veth
 *   peer any more.
 * - member mode: a member record whose container network namespace is gone: the node leaves the
 *   tailnet (`leaveMember`), its tailscaled is stopped (found by its socket on its command line
 *   when a plugin killed mid-ADD never wrote its pid), and its folder is removed unless the
 *   identity is persistent. Folders a killed plugin was making are removed; member folders that
 *   are symbolic links or another user's are never touched.
 *
 * It never fails: what could not be removed is listed in `errors` and tried again next time.
 */

/** A router-mode network whose addresses come from our IPAM (`containerscale-ipam` or built in). */
export interface GcNetwork {
  readonly name: string
  /** the `dataDir` of its `ipam` section; the Ipam's default when undefined */
  readonly dataDir?: string | undefined
  readonly pool: Pool
}

export interface GcOptions {
  /** the node's state directory: the member folders are in its `member/` */
  readonly stateDir: string
  readonly networks: ReadonlyArray<GcNetwork>
  /** the node's network namespace, by path; undefined is the caller's own (tests pass a throwaway one) */
  readonly nodeNetns?: string | undefined
  /** report what would be removed, change nothing */
  readonly dryRun?: boolean | undefined
  /** how long a host interface must stay missing before its address is released; default 2000 ms */
  readonly graceMs?: number | undefined
}

export interface GcReleasedAddress {
  readonly network: string
  readonly containerId: string
  readonly ifname: string
  readonly hostInterface: string
  readonly ips: ReadonlyArray<string>
}

export interface GcRemovedLink {
  readonly name: string
  readonly network: string
  readonly containerId: string
  readonly ifname: string
  readonly reason: string
}

export interface GcRemovedMember {
  readonly network: string
  readonly identity: string
  readonly containerId: string
  readonly netns: string
  /** persistent identity: its state was kept, only the daemon stopped */
  readonly keptState: boolean
  readonly wasRunning: boolean
}

export interface GcError {
  readonly what: string
  readonly message: string
}

export interface GcReport {
  readonly dryRun: boolean
  readonly addresses: ReadonlyArray<GcReleasedAddress>
  readonly links: ReadonlyArray<GcRemovedLink>
  readonly members: ReadonlyArray<GcRemovedMember>
  readonly errors: ReadonlyArray<GcError>
}

export const DEFAULT_GC_GRACE_MS = 2000

/** statfs(2) f_type of nsfs: what a live namespace file (bind mount or /proc/PID/ns/net) is on. */
const NSFS_MAGIC = 0x6e736673

/**
 * True when `netns` no longer names a network namespace: the path is missing, or it is a plain file
 * left behind after its bind mount went away. Unknown (e.g. no permission) counts as alive.
 */
export const netnsGone = (netns: string): boolean => {
  if (netns === "") return false
  try {
    return fs.statfsSync(netns).type !== NSFS_MAGIC
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    return code === "ENOENT" || code === "ENOTDIR" || code === "ESRCH"
  }
}

const IpDetailedLink = Schema.Struct({
  ifname: Schema.String,
  ifalias: Schema.optional(Schema.String),
  link: Schema.optional(Schema.NullOr(Schema.String)),
  link_index: Schema.optional(Schema.Number),
  link_netnsid: Schema.optional(Schema.Number),
  linkinfo: Schema.optional(Schema.Struct({ info_kind: Schema.optional(Schema.String) }))
})
type IpDetailedLink = typeof IpDetailedLink.Type

const decodeDetailed = Schema.decodeUnknownSync(Schema.Array(IpDetailedLink))

/** `ip -details -json link show` in the node's namespace: what `Netlink.links` does not say (the peer). */
const detailedLinks = (nodeNetns: string | undefined) =>
  Effect.flatMap(
    Effect.promise(() => {
      const argv = ["ip", "-details", "-json", "link", "show"]
      const [file, ...args] = nodeNetns === undefined ? argv : ["nsenter", `--net=${nodeNetns}`, "--", ...argv]
      return runProcess(file!, args)
    }),
    (done) =>
      Effect.try({
        try: () => {
          if (done._tag !== "Exited") throw new Error(`cannot run ip: ${done.reason}`)
          if (done.code !== 0) throw new Error(`ip -details link show failed: ${done.stderr.trim().split("\n")[0] ?? ""}`)
          return done.stdout.trim() === "" ? [] : decodeDetailed(JSON.parse(done.stdout))
        },
        catch: (e) => (e instanceof Error ? e.message : String(e))
      })
  )

/** A veth with a peer shows `link` (peer in the same namespace) or `link_index`/`link_netnsid`. */
const peerGone = (l: IpDetailedLink): string | undefined => {
  if (l.linkinfo?.info_kind !== "veth") return `not a veth (${l.linkinfo?.info_kind ?? "no kind"})`
  if ((l.link === undefined || l.link === null) && l.link_index === undefined && l.link_netnsid === undefined) {
    return "its veth peer is gone"
  }
  return undefined
}

const message = (e: unknown) =>
  e !== null && typeof e === "object" && "message" in e && typeof e.message === "string" ? e.message : String(e)

/** Runs one node GC pass; see the module comment. */
export const gcNode = Effect.fnUntraced(function*(
  options: GcOptions
): Effect.fn.Return<GcReport, never, Ipam | Netlink | LocalApi> {
  const ipam = yield* Ipam
  const netlink = yield* Netlink
  const dryRun = options.dryRun ?? false
  const graceMs = options.graceMs ?? DEFAULT_GC_GRACE_MS
  const addresses: Array<GcReleasedAddress> = []
  const links: Array<GcRemovedLink> = []
  const members: Array<GcRemovedMember> = []
  const errors: Array<GcError> = []
  const linkNames = netlink.links(options.nodeNetns).pipe(
    Effect.map((ls) => new Set(ls.map((l) => l.name))),
    Effect.catch((e) => Effect.sync(() => (errors.push({ what: "links of the node", message: e.message }), undefined)))
  )

  // Router mode: addresses whose host end is gone.
  if (options.networks.length > 0) {
    const before = yield* linkNames
    if (before !== undefined) {
      const candidates: Array<{ network: GcNetwork; containerId: string; ifname: string; host: string; ips: Array<string> }> = []
      for (const network of options.networks) {
        const usage = yield* ipam.usage({ network: network.name, dataDir: network.dataDir, pool: network.pool }).pipe(
          Effect.catch((e) => Effect.sync(() => (errors.push({ what: `IPAM store of ${network.name}`, message: e.message }), [])))
        )
        const byAttachment = new Map<string, (typeof candidates)[number]>()
        for (const set of usage) {
          for (const a of set.allocations) {
            const host = hostInterfaceName(a.containerId, a.ifname)
            if (before.has(host)) continue
            const key = `${a.containerId}\0${a.ifname}`
            const found = byAttachment.get(key)
            if (found !== undefined) found.ips.push(a.ip)
            else byAttachment.set(key, { network, containerId: a.containerId, ifname: a.ifname, host, ips: [a.ip] })
          }
        }
        candidates.push(...byAttachment.values())
      }
      if (candidates.length > 0 && graceMs > 0) yield* Effect.sleep(graceMs)
      const after = candidates.length > 0 && graceMs > 0 ? yield* linkNames : before
      for (const c of candidates) {
        if (after === undefined || after.has(c.host)) continue
        if (dryRun) {
          addresses.push({ network: c.network.name, containerId: c.containerId, ifname: c.ifname, hostInterface: c.host, ips: c.ips })
          continue
        }
        // release only this attachment, so an ADD that allocates meanwhile is never touched
        yield* ipam.release({ network: c.network.name, dataDir: c.network.dataDir, containerId: c.containerId, ifname: c.ifname }).pipe(
          Effect.tap((ips) =>
            Effect.sync(() => {
              if (ips.length > 0) {
                addresses.push({ network: c.network.name, containerId: c.containerId, ifname: c.ifname, hostInterface: c.host, ips })
              }
            })
          ),
          Effect.catch((e) => Effect.sync(() => errors.push({ what: `addresses of ${c.containerId} (${c.ifname}) in ${c.network.name}`, message: e.message })))
        )
      }
    }
  }

  // Router mode: host ends with our alias whose peer is gone.
  const detailed = yield* detailedLinks(options.nodeNetns).pipe(
    Effect.catch((e) => Effect.sync(() => (errors.push({ what: "links of the node", message: e }), [] as ReadonlyArray<IpDetailedLink>)))
  )
  for (const l of detailed) {
    const owner = parseHostInterfaceAlias(l.ifalias)
    if (owner === undefined || !l.ifname.startsWith("cs")) continue
    const reason = peerGone(l)
    if (reason === undefined) continue
    const removed = { name: l.ifname, ...owner, reason }
    if (dryRun) {
      links.push(removed)
      continue
    }
    yield* netlink.deleteLink(l.ifname, options.nodeNetns).pipe(
      Effect.tap(() => Effect.sync(() => links.push(removed))),
      Effect.catch((e) => Effect.sync(() => errors.push({ what: `link ${l.ifname}`, message: e.message })))
    )
  }

  // Member mode: records whose container's namespace is gone.
  const root = memberRoot(options.stateDir)
  if (!dryRun) sweepMemberRoot(root)
  for (const { running, ...m } of listMembers(root)) {
    if (!netnsGone(m.netns)) continue
    if (m.persistent && !running) {
      // a kept identity whose daemon is already stopped: nothing to report, only stale files to tidy
      if (!dryRun) yield* leaveMember({ stateDir: root, identity: m.identity, keepState: true }).pipe(Effect.ignore)
      continue
    }
    const removed: GcRemovedMember = {
      network: m.network,
      identity: m.identity,
      containerId: m.containerId,
      netns: m.netns,
      keptState: m.persistent,
      wasRunning: running
    }
    if (dryRun) {
      members.push(removed)
      continue
    }
    yield* leaveMember({ stateDir: root, identity: m.identity, keepState: m.persistent }).pipe(
      Effect.tap(() => Effect.sync(() => members.push(removed))),
      Effect.catch((e) => Effect.sync(() => errors.push({ what: `member ${m.identity}`, message: message(e) })))
    )
  }

  return { dryRun, addresses, links, members, errors }
})

import { Effect } from "effect"
import * as fs from "node:fs"
import { CheckFailed, NotAvailable } from "../errors.ts"
import { checkDataDir, Ipam } from "../ipam/Ipam.ts"
import { Netlink } from "../netlink/Netlink.ts"
import type { Pool } from "../pool.ts"
import { attachRouter, detachRouter, gcRouterLinks, hostInterfaceName, type RouterRuntime, unwireRouter, wireRouter } from "./attach.ts"

/**
 * Router mode's whole workflow, for every runtime: attach (allocate and wire, or wire addresses
 * the runtime chose, or hand the container end to the runtime), detach, check, collect, report.
 * Addresses come from the core's `Ipam`, or from an IPAM the adapter runs itself (a delegated
 * CNI IPAM plugin, Podman's own): then the adapter passes what that IPAM does as an effect.
 */

/** What a delegated IPAM does for one call; its failure's message is passed on. */
export type Delegated<E = { readonly message: string }> = Effect.Effect<unknown, E>

const isDelegated = <E>(ipam: object): ipam is Delegated<E> => Effect.isEffect(ipam)

export interface RouterCheckRequest<E> {
  readonly network: string
  readonly containerId: string
  readonly ifname: string
  /** the interface's name inside the container; `ifname` when undefined */
  readonly containerIfname?: string | undefined
  readonly netns: string
  readonly nodeNetns?: string | undefined
  /** the addresses the attachment got, as CIDRs, from the runtime's record of it */
  readonly addresses: ReadonlyArray<string>
  /** the in-process IPAM's store, or the delegated IPAM's own check */
  readonly ipam: { readonly dataDir?: string | undefined; readonly pool: Pool } | Delegated<E>
}

const who = (r: { readonly containerId: string; readonly ifname: string }) => `container ${r.containerId} (${r.ifname})`

/** Fails, saying what to do, unless the attachment is still as attach left it. */
const check = <E>(request: RouterCheckRequest<E>) => Effect.gen(function*() {
  const netlink = yield* Netlink
  if (!fs.existsSync(request.netns)) {
    return yield* new CheckFailed({ message: `the network namespace ${request.netns} of ${who(request)} is gone: delete the container` })
  }
  const host = hostInterfaceName(request.containerId, request.ifname)
  if ((yield* netlink.link(host, request.nodeNetns)) === undefined) {
    return yield* new CheckFailed({ message: `the host end ${host} of ${who(request)} is gone: delete and re-add the container` })
  }
  const name = request.containerIfname ?? request.ifname
  if ((yield* netlink.link(name, request.netns)) === undefined) {
    return yield* new CheckFailed({ message: `${name} is gone from ${request.netns} (${who(request)}): delete and re-add the container` })
  }
  const have = new Set((yield* netlink.addresses(name, request.netns)).map((a) => `${a.ip}/${a.prefix}`))
  const missing = request.addresses.filter((a) => !have.has(a))
  if (missing.length > 0) {
    return yield* new CheckFailed({ message: `${who(request)} lost ${missing.join(", ")} on ${name}: delete and re-add the container` })
  }
  if (isDelegated<E>(request.ipam)) return yield* Effect.asVoid(request.ipam)
  const leases = yield* (yield* Ipam).leases({ ...request, ...request.ipam })
  const held = new Set(leases.map((l) => l.ip))
  const unrecorded = request.addresses.map((a) => a.split("/")[0]!).filter((ip) => !held.has(ip))
  if (unrecorded.length > 0) {
    return yield* new CheckFailed({
      message: `the IPAM store no longer records ${unrecorded.join(", ")} for ${who(request)}: delete and re-add the container`
    })
  }
})

/**
 * Removes the host ends of the runtime's network whose attachment is not in `valid`, then collects
 * their addresses; keeps going past failures and reports them all.
 */
const gc = Effect.fnUntraced(function*(request: {
  /** whose network it is: another runtime's network of the same name is left alone; undefined is CNI's */
  readonly runtime?: RouterRuntime | undefined
  readonly network: string
  readonly valid: ReadonlyArray<{ readonly containerId: string; readonly ifname: string }>
  readonly nodeNetns?: string | undefined
  /** the in-process IPAM's data directory, or the delegated IPAM's own GC; none: only links */
  readonly ipam?: { readonly dataDir?: string | undefined } | Delegated | undefined
}) {
  const failures: Array<{ readonly message: string }> = [...yield* gcRouterLinks(request)]
  const collect: Delegated = request.ipam === undefined
    ? Effect.void
    : isDelegated(request.ipam)
    ? request.ipam
    : (yield* Ipam).gc({ network: request.network, dataDir: request.ipam.dataDir, valid: request.valid })
  yield* collect.pipe(Effect.catch((e) => Effect.sync(() => failures.push(e))))
  if (failures.length > 0) {
    return yield* new NotAvailable({ message: `GC finished with ${failures.length} failure(s): ${failures.map((f) => f.message).join("; ")}` })
  }
})

/** Fails, saying what to fix, when an attach could not work now. */
const status = <E>(request: { readonly ipam: { readonly dataDir?: string | undefined } | Delegated<E> }) => Effect.gen(function*() {
  yield* isDelegated<E>(request.ipam) ? Effect.asVoid(request.ipam) : checkDataDir(request.ipam.dataDir)
  const netlink = yield* Netlink
  yield* Effect.andThen(netlink.ready, netlink.links()).pipe(
    Effect.mapError((e) => new NotAvailable({ message: `not ready: ${e.message}` }))
  )
})

export const Router = {
  /** Allocates from the `Ipam` and wires; a failure at any step leaves no link and no address. */
  attach: attachRouter,
  /** Wires addresses the attachment already holds (a delegated IPAM's, the runtime's), or hands the pair to the runtime. */
  wire: wireRouter,
  /** Removes the veth pair and frees the addresses in the `Ipam`; succeeds when any of it is gone. */
  detach: detachRouter,
  /** Removes the veth pair only (the addresses are another IPAM's). */
  unwire: unwireRouter,
  check,
  gc,
  status
} as const

import { Context, type Effect } from "effect"
import type { NetlinkFailure } from "../errors.ts"

/**
 * Links, addresses, routes, MTU, sysctls and TUN devices inside any network namespace, named by
 * path (`/var/run/netns/X`, `/proc/PID/ns/net`); `netns` undefined means the caller's own. The live
 * layer drives iproute2 (`layerIproute2`); a native rtnetlink layer can replace it behind this
 * interface.
 */

export interface Link {
  readonly name: string
  readonly index: number
  readonly mtu: number
  readonly mac: string | undefined
  readonly up: boolean
  /** iproute2's link_type: "ether", "none" (TUN), "loopback", ... */
  readonly type: string
  /** the link's alias, which records who made it */
  readonly alias: string | undefined
}

export interface InterfaceAddress {
  readonly family: 4 | 6
  readonly ip: string
  readonly prefix: number
  readonly scope: string | undefined
}

export interface Route {
  /** "default" or a CIDR */
  readonly dst: string
  readonly gateway: string | undefined
  readonly dev: string | undefined
  readonly scope: string | undefined
}

/** One change, or `show` to read a link back; a list of them runs as one `ip -batch -` exec. */
export type Step =
  | {
    readonly op: "veth"
    /** the end made here */
    readonly name: string
    /** the end created directly inside `peerNetns` under its final name */
    readonly peerName: string
    readonly peerNetns: string
    readonly mtu?: number | undefined
  }
  | { readonly op: "show"; readonly dev: string }
  | { readonly op: "up"; readonly dev: string }
  | { readonly op: "mtu"; readonly dev: string; readonly mtu: number }
  | {
    readonly op: "address"
    readonly dev: string
    readonly cidr: string
    readonly flags?: ReadonlyArray<"nodad" | "noprefixroute"> | undefined
  }
  | {
    readonly op: "route"
    readonly dst: string
    readonly dev: string
    readonly via?: string | undefined
    readonly scope?: "link" | "host" | undefined
  }
  | { readonly op: "alias"; readonly dev: string; readonly alias: string }
  | { readonly op: "delete"; readonly dev: string }

export interface VethRequest extends Omit<Extract<Step, { op: "veth" }>, "op"> {
  /** where `name` stays (the caller's namespace when undefined) */
  readonly netns?: string | undefined
}

export class Netlink extends Context.Service<Netlink, {
  /** Fails, saying what to install, when the layer cannot work on this machine. */
  readonly ready: Effect.Effect<void, NetlinkFailure>
  readonly links: (netns?: string) => Effect.Effect<ReadonlyArray<Link>, NetlinkFailure>
  readonly link: (name: string, netns?: string) => Effect.Effect<Link | undefined, NetlinkFailure>
  readonly addresses: (dev: string, netns?: string) => Effect.Effect<ReadonlyArray<InterfaceAddress>, NetlinkFailure>
  readonly routes: (family: 4 | 6, netns?: string) => Effect.Effect<ReadonlyArray<Route>, NetlinkFailure>
  /**
   * Runs the steps in order in one exec and returns the links its `show` steps read, in order; on
   * failure says which step failed and why.
   */
  readonly apply: (steps: ReadonlyArray<Step>, netns?: string) => Effect.Effect<ReadonlyArray<Link>, NetlinkFailure>
  readonly createVeth: (request: VethRequest) => Effect.Effect<{ readonly host: Link; readonly peer: Link }, NetlinkFailure>
  /** Deletes a link; false when there was none (so callers can be idempotent). */
  readonly deleteLink: (name: string, netns?: string) => Effect.Effect<boolean, NetlinkFailure>
  readonly createTun: (name: string, netns?: string) => Effect.Effect<Link, NetlinkFailure>
  /** Writes a sysctl such as "net.ipv4.ip_forward" in the namespace. */
  readonly setSysctl: (key: string, value: string, netns?: string) => Effect.Effect<void, NetlinkFailure>
}>()("@containerscale/core/Netlink") {}

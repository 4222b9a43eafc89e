import { Context, Effect, Layer } from "effect"
import type { CheckFailed, InvalidNetworkConfig, MemberFailure, NotAvailable } from "../errors.ts"
import type { MemberOptions, Spelling } from "../networkOptions.ts"
import { Netlink } from "../netlink/Netlink.ts"
import { LocalApi } from "./LocalApiService.ts"
import type { MemberAttachment, MemberSettings } from "./memberSettings.ts"
import type { joinMember } from "./tailscaled.ts"

/**
 * Member mode's whole workflow, for every runtime: join, leave, check, collect, report. Adapters
 * hand it the network's options as they decoded them and the attachment; it gives back what the
 * container got (its tailnet addresses, its TUN device and MagicDNS), which each adapter writes in
 * its own result format.
 */

/** MagicDNS's resolver, inside every tailnet node. */
export const QUAD_100 = "100.100.100.100"

/** A member network as an adapter decoded it. */
export interface MemberNetwork {
  readonly options: MemberOptions
  /** the plugin's (driver's) environment: `CONTAINERSCALE_AUTH_KEY`, `authKeyEnv`, the state directory */
  readonly env: Readonly<Record<string, string | undefined>>
  readonly spelling: Spelling
}

export interface Joined {
  readonly settings: MemberSettings
  /** the tailnet addresses, as CIDRs (`100.64.0.1/32`, `fd7a:115c:a1e0::1/128`) */
  readonly addresses: ReadonlyArray<string>
  /** the TUN device inside the container; undefined in userspace networking */
  readonly device: { readonly name: string; readonly mac: string } | undefined
  /** what the container's resolver should use, when MagicDNS is on and the tailnet has a suffix */
  readonly dns: { readonly nameservers: ReadonlyArray<string>; readonly search: ReadonlyArray<string> } | undefined
}

/**
 * A locally administered MAC for the TUN device, which has none, stable per node address: Podman
 * and some CNI consumers want one per interface.
 */
export const pseudoMac = (address: string) => {
  let h = 0x811c9dc5
  for (let i = 0; i < address.length; i++) h = Math.imul(h ^ address.charCodeAt(i), 0x01000193)
  const bytes = [0x02, 0x00, (h >>> 24) & 255, (h >>> 16) & 255, (h >>> 8) & 255, h & 255]
  return bytes.map((b) => b.toString(16).padStart(2, "0")).join(":")
}

/** MagicDNS first, then what the container had: 100.100.100.100 and the tailnet's search domain lead. */
export const withMagicDns = <D extends { readonly nameservers?: ReadonlyArray<string> | undefined; readonly search?: ReadonlyArray<string> | undefined }>(
  dns: D | undefined,
  joined: Joined
): D | undefined => {
  if (joined.dns === undefined) return dns
  const first = <A>(lead: ReadonlyArray<A>, rest: ReadonlyArray<A> | undefined) => [...lead, ...(rest ?? []).filter((x) => !lead.includes(x))]
  return { ...dns, nameservers: first(joined.dns.nameservers, dns?.nameservers), search: first(joined.dns.search, dns?.search) } as unknown as D
}

/** Tailscale's address ranges: which of a container's addresses its tailscaled owns. */
export const isTailnetAddress = (ip: string) => /^100\.|^fd7a:115c:a1e0:/i.test(ip)

type Settled = InvalidNetworkConfig | Effect.Error<ReturnType<typeof joinMember>>

export class Member extends Context.Service<Member, {
  /** Starts the container's tailscaled inside `attachment.netns` and waits until it is Running on the tailnet. */
  readonly join: (network: MemberNetwork, attachment: MemberAttachment & { readonly netns: string }) => Effect.Effect<Joined, Settled>
  /** Takes the attachment's node off the tailnet; false when it had none. */
  readonly leave: (network: MemberNetwork, attachment: MemberAttachment) => Effect.Effect<boolean, InvalidNetworkConfig | MemberFailure>
  /** Fails unless the attachment's tailscaled runs, is Running and still holds `recorded`'s tailnet addresses. */
  readonly check: (
    network: MemberNetwork,
    attachment: MemberAttachment,
    recorded: ReadonlyArray<string>
  ) => Effect.Effect<void, InvalidNetworkConfig | CheckFailed>
  /** Takes every node of the network whose attachment is not in `valid` off the tailnet; keeps going past failures. */
  readonly gc: (
    network: MemberNetwork,
    name: string,
    valid: ReadonlyArray<{ readonly containerId: string; readonly ifname: string }>
  ) => Effect.Effect<void, InvalidNetworkConfig | NotAvailable>
  /** Fails, saying what to install or fix, when a container could not join now. */
  readonly status: (network: MemberNetwork) => Effect.Effect<void, InvalidNetworkConfig | NotAvailable>
  /** One line for people: `Running 100.64.0.1 fd7a:…`, `Stopped`, `NeedsLogin`, ... */
  readonly state: (network: MemberNetwork, attachment: MemberAttachment) => Effect.Effect<string, InvalidNetworkConfig>
}>()("@containerscale/core/Member") {
  /**
   * tailscaled processes, through the LocalAPI; IPv6 is switched on in the namespace for
   * tailscale0's address. The implementation is loaded at the first call, so a program that
   * provides the layer but runs router mode does not pay for loading it.
   */
  static readonly layer: Layer.Layer<Member, never, Netlink | LocalApi> = Layer.effect(
    Member,
    Effect.gen(function*() {
      const netlink = yield* Netlink
      const localApi = yield* LocalApi
      let live: Promise<Member["Service"]> | undefined
      const load = Effect.promise(() => (live ??= import("./memberLive.ts").then((m) => m.makeLive(netlink, localApi))))
      const call = <K extends keyof Member["Service"]>(key: K) =>
        ((...args: Array<unknown>) => Effect.flatMap(load, (impl) => (impl[key] as (...a: Array<unknown>) => Effect.Effect<unknown, unknown>)(...args))) as Member["Service"][K]
      return Member.of({
        join: call("join"),
        leave: call("leave"),
        check: call("check"),
        gc: call("gc"),
        status: call("status"),
        state: call("state")
      })
    })
  )
}


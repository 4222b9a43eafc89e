import { Context, Effect, Layer } from "effect"
import type { CheckFailed, InvalidNetworkConfig, MemberFailure, NotAvailable } from "../errors.ts"
import { Netlink } from "../netlink/Netlink.ts"
import { LocalApi } from "./LocalApi.ts"
import { makeLive } from "./memberLive.ts"
import type { Joined, MemberNetwork } from "./memberNetwork.ts"
import type { MemberAttachment } from "./memberSettings.ts"
import type { joinMember } from "./tailscaled.ts"

/**
 * Member mode's whole workflow, for every runtime: join, leave, check, collect, report. Adapters
 * hand it the network's options as they decoded them and the attachment; it gives back what the
 * container got (its tailnet addresses, its TUN device and MagicDNS), which each adapter writes in
 * its own result format.
 */

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
  /** tailscaled processes, through the LocalAPI; IPv6 is switched on in the namespace for tailscale0's address. */
  static readonly layer: Layer.Layer<Member, never, Netlink | LocalApi> = Layer.effect(
    Member,
    Effect.gen(function*() {
      return makeLive(yield* Netlink, yield* LocalApi)
    })
  )
}


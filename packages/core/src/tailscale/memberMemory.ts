import { Effect, Layer } from "effect"
import { CheckFailed } from "../errors.ts"
import { Member } from "./Member.ts"
import { isTailnetAddress, pseudoMac, QUAD_100 } from "./memberNetwork.ts"
import { type MemberAttachment, resolveMemberSettings } from "./memberSettings.ts"

/**
 * A `Member` without tailscaled, for unit tests of code above it: options and keys are resolved
 * (and refused) exactly as the live layer does, and every joined attachment gets the next pair of
 * tailnet addresses and the MagicDNS suffix `tailnet.test`. `nodes` shows who is on the "tailnet".
 */

export const MAGIC_DNS_SUFFIX = "tailnet.test"

export interface MemoryTailnet {
  /** attachment key (`network/containerId/ifname`) -> its addresses */
  readonly nodes: ReadonlyMap<string, ReadonlyArray<string>>
}

const keyOf = (a: MemberAttachment) => `${a.network}/${a.containerId}/${a.ifname}`

export const makeMemberMemory = (): { readonly tailnet: MemoryTailnet; readonly layer: Layer.Layer<Member> } => {
  const nodes = new Map<string, ReadonlyArray<string>>()
  let next = 1
  const service = Member.of({
    join: (network, attachment) =>
      Effect.gen(function*() {
        const settings = yield* resolveMemberSettings(network.options, attachment, network.env, network.spelling, { withAuthKey: true })
        const n = next++
        const addresses = [`100.64.${n >> 8}.${n & 255}/32`, `fd7a:115c:a1e0::${n.toString(16)}/128`]
        nodes.set(keyOf(attachment), addresses)
        return {
          settings,
          addresses,
          device: settings.userspace ? undefined : { name: "tailscale0", mac: pseudoMac(addresses[0]!.split("/")[0]!) },
          dns: settings.magicDns ? { nameservers: [QUAD_100], search: [MAGIC_DNS_SUFFIX] } : undefined
        }
      }),
    leave: (_network, attachment) => Effect.sync(() => nodes.delete(keyOf(attachment))),
    check: (_network, attachment, recorded) =>
      Effect.suspend(() => {
        const have = new Set((nodes.get(keyOf(attachment)) ?? []).map((a) => a.split("/")[0]))
        const expected = recorded.map((a) => a.split("/")[0]!).filter(isTailnetAddress)
        return expected.length > 0 && expected.every((ip) => have.has(ip))
          ? Effect.void
          : Effect.fail(new CheckFailed({ message: `container ${attachment.containerId} (${attachment.ifname}) is not on the tailnet as recorded` }))
      }),
    gc: (_network, name, valid) =>
      Effect.sync(() => {
        const keep = new Set(valid.map((a) => `${name}/${a.containerId}/${a.ifname}`))
        for (const key of [...nodes.keys()]) if (key.startsWith(`${name}/`) && !keep.has(key)) nodes.delete(key)
      }),
    status: () => Effect.void,
    state: (_network, attachment) =>
      Effect.sync(() => {
        const addresses = nodes.get(keyOf(attachment))
        return addresses === undefined ? "Stopped" : `Running ${addresses.map((a) => a.split("/")[0]).join(" ")}`
      })
  })
  return { tailnet: { nodes }, layer: Layer.succeed(Member, service) }
}

import { decodeStringOptions, type NetworkOptions, spelled, type Spelling } from "@containerscale/core"
import { type MemberNetwork } from "@containerscale/core/member"
import { Effect } from "effect"
import type { Network } from "./protocol.ts"

/**
 * The `-o` options of `podman network create -d containerscale-netavark`: the core's network
 * options, spelled with underscores (Podman's own style) and no prefix: `-o login_server=URL`.
 */
export const netavarkSpelling: Spelling = {
  name: spelled("_"),
  set: (option, value) => `-o ${spelled("_")(option)}=${value}`,
  environment: "the environment podman runs netavark with",
  reader: "containerscale-netavark, as the user podman runs as"
}

export const optionsOf = (network: Network): Effect.Effect<NetworkOptions, import("@containerscale/core").InvalidNetworkConfig> =>
  decodeStringOptions(network.options ?? {}, netavarkSpelling)

/** The options of a teardown: what can be read of them; a network whose options went bad is still torn down. */
export const teardownOptionsOf = (network: Network, warn: (message: string) => void) =>
  optionsOf(network).pipe(
    Effect.catch((e) =>
      Effect.sync(() => {
        warn(`teardown: ignoring the network's options: ${e.message}`)
        return { mode: "member" as const, mtu: 0, member: {} }
      })
    )
  )

export const memberNetworkOf = (options: NetworkOptions, env: Readonly<Record<string, string | undefined>>): MemberNetwork => ({
  options: options.member,
  env,
  spelling: netavarkSpelling
})

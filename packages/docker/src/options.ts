import { decodeStringOptions, type NetworkOptions, spelled, type Spelling, STRING_OPTIONS } from "@containerscale/core"
import { type MemberNetwork } from "@containerscale/core/member"
import { Effect } from "effect"

/**
 * The `-o` options of `docker network create -d containerscale`: the core's network options,
 * spelled `containerscale.<name-with-dashes>`: `-o containerscale.login-server=URL`. Options of
 * other prefixes belong to dockerd or another tool and are left alone. The state directory is the
 * driver's (`--state-dir`), not a network's.
 */
export const PREFIX = "containerscale."

export const dockerSpelling: Spelling = {
  name: spelled("-", PREFIX),
  set: (option, value) => `-o ${spelled("-", PREFIX)(option)}=${value}`,
  environment: "containerscale-docker's environment (set it in the driver's service: Environment= / EnvironmentFile=)",
  reader: "containerscale-docker, as root on the host"
}

const ACCEPTED = STRING_OPTIONS.filter((o) => o !== "stateDir")

/** Our options among dockerd's generic options; a value that is not a string is refused by name. */
export const ownOptions = (generic: Readonly<Record<string, unknown>>): Record<string, string> =>
  Object.fromEntries(
    Object.entries(generic).filter(([k]) => k.startsWith(PREFIX)).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)])
  )

export const decodeOptions = (own: Readonly<Record<string, string>>): Effect.Effect<NetworkOptions, import("@containerscale/core").InvalidNetworkConfig> =>
  decodeStringOptions(own, dockerSpelling, ACCEPTED)

/** A member network's settings as the driver keeps them: the network's options, the driver's state directory and environment. */
export const memberNetworkOf = (
  own: Readonly<Record<string, string>>,
  stateDir: string,
  env: Readonly<Record<string, string | undefined>>
): Effect.Effect<MemberNetwork, import("@containerscale/core").InvalidNetworkConfig> =>
  Effect.map(decodeOptions(own), (o) => ({ options: { ...o.member, stateDir }, env, spelling: dockerSpelling }))

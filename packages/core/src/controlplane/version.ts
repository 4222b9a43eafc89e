import { Effect } from "effect"
import { type ControlPlaneError, ControlPlaneUnexpectedAnswer } from "./errors.ts"
import type { Call, HeadscaleHttp } from "./http.ts"
import { ApiKeysAnswer, RoutesAnswer, VersionAnswer } from "./schemas.ts"
import type { HeadscaleGeneration, HeadscaleServerVersion } from "./types.ts"

/**
 * Which Headscale generation a server is, found out once per client: `GET /version` (0.27+, and
 * without the API key) names the release; before 0.27 there is none, so the ≤0.25 routes API is
 * probed, and a server with neither must still answer the API key list to count as 0.26. The
 * generation decides the path for route approval, route listing and pre-auth keys.
 */

export const versionGeneration = (version: string): HeadscaleGeneration => {
  const match = /^v?(\d+)\.(\d+)/.exec(version.trim())
  if (match === null) return "0.26+" // a dev build; /version exists only from 0.27
  return Number(match[1]) === 0 && Number(match[2]) <= 25 ? "legacy" : "0.26+"
}

const detect = (http: HeadscaleHttp): Effect.Effect<HeadscaleServerVersion, ControlPlaneError> =>
  Effect.gen(function*() {
    const versionCall: Call = { method: "GET", path: "/version", anonymous: true }
    const answer = yield* http.exchange(versionCall)
    if (answer.status === 200) {
      const { version } = yield* http.decode(versionCall, VersionAnswer, answer.body)
      return { version, generation: versionGeneration(version) } satisfies HeadscaleServerVersion
    }
    if (answer.status !== 404) return yield* http.statusError(versionCall, answer)
    // before 0.27: the routes API answers up to 0.25
    const routesCall: Call = { method: "GET", path: "/api/v1/routes" }
    const probe = yield* http.exchange(routesCall)
    if (probe.status === 200) {
      yield* http.decode(routesCall, RoutesAnswer, probe.body)
      return { version: undefined, generation: "legacy" } satisfies HeadscaleServerVersion
    }
    if (probe.status !== 404) return yield* http.statusError(routesCall, probe)
    // 0.26 has neither; make sure this is a Headscale API at all
    const keysCall: Call = { method: "GET", path: "/api/v1/apikey" }
    const keys = yield* http.exchange(keysCall)
    if (keys.status !== 200) {
      const error = http.statusError(keysCall, keys)
      if (error._tag !== "ControlPlaneNotFound") return yield* error
      return yield* new ControlPlaneUnexpectedAnswer({
        ...http.fields(keysCall, { status: keys.status }),
        message: `${http.url} has no /version, no /api/v1/routes and no /api/v1/apikey: it is not a Headscale server ` +
          `(or one older than 0.23); check the URL`
      })
    }
    yield* http.decode(keysCall, ApiKeysAnswer, keys.body)
    return { version: undefined, generation: "0.26+" } satisfies HeadscaleServerVersion
  })

/** The server's version, detected on the first call and cached once that succeeded. */
export const makeVersion = (http: HeadscaleHttp): () => Effect.Effect<HeadscaleServerVersion, ControlPlaneError> => {
  let detected: HeadscaleServerVersion | undefined
  const detecting = detect(http)
  return () => detected !== undefined ? Effect.succeed(detected) : Effect.tap(detecting, (found) => Effect.sync(() => (detected = found)))
}

import { Clock, Duration, Effect, Option, Predicate, Redacted } from "effect"
import { type ControlPlaneError, ControlPlaneNotFound } from "./errors.ts"
import { type Call, type HeadscaleHttp, isId } from "./http.ts"
import { unique } from "./routes.ts"
import { PreAuthKeyAnswer, UsersAnswer } from "./schemas.ts"
import type { HeadscaleClient, HeadscaleServerVersion } from "./types.ts"

/**
 * Pre-auth keys (`POST /api/v1/preauthkey`). The owner is a user name up to 0.25 and a user id
 * from 0.26; 0.28+ also takes a key with tags and no user. The key comes back `Redacted`, and the
 * answer is marked secret so the key stays out of any error made of it.
 */

export const makePreAuthKeys = (
  http: HeadscaleHttp,
  version: () => Effect.Effect<HeadscaleServerVersion, ControlPlaneError>
): HeadscaleClient["createPreAuthKey"] => {
  const userBy = (by: "name" | "id", value: string, missing: string) => {
    const call: Call = { method: "GET", path: "/api/v1/user", query: { [by]: value } }
    return http.json(call, UsersAnswer).pipe(
      Effect.flatMap((answer) => {
        const user = answer.users.find((candidate) => candidate[by] === value)
        return user !== undefined
          ? Effect.succeed(user)
          : Effect.fail(new ControlPlaneNotFound({ ...http.fields(call), message: `Headscale at ${http.url} has no ${missing}` }))
      })
    )
  }
  const userByName = (name: string) =>
    userBy("name", name, `user ${JSON.stringify(name)}: create it (POST /api/v1/user) or name another`)
  const userById = (id: string) => userBy("id", id, `user with id ${id}`)

  return (opts) =>
    Effect.gen(function*() {
      const call: Call = { method: "POST", path: "/api/v1/preauthkey", secretAnswer: true }
      const lifetimeMillis = Option.match(Duration.fromInput(opts.expiresIn), { onNone: () => NaN, onSome: Duration.toMillis })
      if (!(lifetimeMillis > 0) || !Number.isFinite(lifetimeMillis)) {
        return yield* http.rejectLocally(call, `expiresIn must be a positive, finite duration (Headscale treats a key without a future expiration as expired)`)
      }
      const tags = unique(opts.tags ?? [])
      const { generation } = yield* version()
      const ref = opts.user
      let user: string | undefined
      if (generation === "legacy") {
        if (ref === undefined) {
          return yield* http.rejectLocally(call, `Headscale ≤0.25 needs a user for a pre-auth key: give options.user`)
        }
        user = Predicate.isString(ref) ? ref : (yield* userById(ref.id)).name
      } else if (ref !== undefined) {
        user = Predicate.isString(ref) ? (yield* userByName(ref)).id : ref.id
        if (!isId(user)) return yield* http.rejectLocally(call, `invalid user id ${JSON.stringify(user)}: give a decimal id`)
      }
      const now = yield* Clock.currentTimeMillis
      const expiration = new Date(now + lifetimeMillis).toISOString()
      const body = {
        ...(user === undefined ? {} : { user }),
        reusable: opts.reusable,
        ephemeral: opts.ephemeral,
        expiration,
        aclTags: tags
      }
      const { preAuthKey } = yield* http.json({ ...call, body }, PreAuthKeyAnswer)
      const owner = preAuthKey.user
      return {
        id: preAuthKey.id,
        key: Redacted.make(preAuthKey.key, { label: "PreAuthKey" }),
        // ≤0.25 answers with the user's email when it has one: the name asked for is the owner's name
        user: generation === "legacy" ? user : owner === undefined || owner === null ? undefined : Predicate.isString(owner) ? (owner === "" ? undefined : owner) : owner.name,
        reusable: preAuthKey.reusable,
        ephemeral: preAuthKey.ephemeral,
        expiration: preAuthKey.expiration ?? undefined,
        aclTags: preAuthKey.aclTags ?? []
      }
    })
}

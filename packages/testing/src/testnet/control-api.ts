import { Result, type Schema } from "effect"
import { decodeBody, json, type Reply } from "./http.ts"
import { LogoutRequest, MAGIC_DNS_SUFFIX, NetmapRequest, RegisterRequest, UpdateRequest } from "./protocol.ts"
import { type FailureKind, TestnetFailure, type TestnetState } from "./state.ts"

const tailnet = { name: MAGIC_DNS_SUFFIX, magicDnsSuffix: MAGIC_DNS_SUFFIX }

const statusOf: Record<FailureKind, number> = { "invalid-argument": 400, "not-found": 404, "invalid-key": 401, unknown: 500, internal: 500 }

const failure = (status: number, message: string): Reply => json(status, { error: message })

const handlers: Record<string, (state: TestnetState, body: string) => Reply> = {
  "/ts/register": (state, body) =>
    decoded(RegisterRequest, body, (request) => json(200, { node: state.toTestnetNode(state.register(request)), tailnet })),
  "/ts/logout": (state, body) =>
    decoded(LogoutRequest, body, (request) => {
      state.logout(request.nodeKey)
      return json(200, {})
    }),
  "/ts/netmap": (state, body) =>
    decoded(NetmapRequest, body, (request) => {
      const { peers, self } = state.netmap(request.nodeKey)
      return json(200, { self: state.toTestnetNode(self), peers: peers.map((peer) => state.toTestnetNode(peer)), tailnet })
    }),
  "/ts/update": (state, body) => decoded(UpdateRequest, body, (request) => json(200, { node: state.toTestnetNode(state.update(request)) }))
}

const decoded = <S extends Schema.ConstraintDecoder<unknown>>(schema: S, body: string, handle: (request: S["Type"]) => Reply): Reply => {
  const request = decodeBody(schema, body)
  if (Result.isFailure(request)) return failure(400, `bad request body: ${request.failure}`)
  try {
    return handle(request.success)
  } catch (error) {
    if (error instanceof TestnetFailure) return failure(statusOf[error.kind], error.message)
    throw error
  }
}

/** The stand-in tailscaled's `/ts/*` calls (see protocol.ts); undefined for any other path. */
export const handleControl = (state: TestnetState, method: string, pathname: string, body: string): Reply | undefined => {
  const handler = handlers[pathname]
  if (handler === undefined) return undefined
  if (method !== "POST") return failure(405, `${pathname} takes POST`)
  return handler(state, body)
}

import { Result, Schema } from "effect"
import { decodeBody, json, type Reply, text } from "./http.ts"
import { type FailureKind, type HeadscaleVersion, TestnetFailure, type TestnetState, usernameOf, ZERO_TIME } from "./state.ts"
import type { StoredNode } from "./store.ts"
import { apiKeyJson, nodeJson, preAuthKeyJson, protoTime, routeJson, userJson } from "./wire.ts"

/** The Headscale version whose API shapes this stand-in imitates by default (`GET /version` reports it with a `v`). */
export const HEADSCALE_VERSION = "0.29.2"

/** The release each generation stands for; 0.25 has no `/version`, this is for messages only. */
export const HEADSCALE_RELEASES: Record<HeadscaleVersion, string> = { "0.29": HEADSCALE_VERSION, "0.25": "0.25.1" }

const grpcStatus: Record<FailureKind, { readonly status: number; readonly code: number }> = {
  "invalid-argument": { status: 400, code: 3 },
  "not-found": { status: 404, code: 5 },
  "invalid-key": { status: 401, code: 16 },
  unknown: { status: 500, code: 2 },
  internal: { status: 500, code: 13 }
}

/** grpc-gateway's error body. */
export const grpcError = (kind: FailureKind, message: string): Reply => {
  const { code, status } = grpcStatus[kind]
  return json(status, { code, message, details: [] })
}

const opt = <S extends Schema.Top>(schema: S) => Schema.optional(Schema.NullOr(schema))
/** protojson takes a uint64 as a decimal string or a number. */
const Id = Schema.Union([Schema.String.check(Schema.isPattern(/^\d+$/)), Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))])
const Timestamp = Schema.String.check(Schema.isPattern(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/))

const CreateUserBody = Schema.Struct({ name: Schema.String, displayName: opt(Schema.String), email: opt(Schema.String), pictureUrl: opt(Schema.String) })
/** 0.25: the user is named, and required. */
const LegacyCreatePreAuthKeyBody = Schema.Struct({
  user: opt(Schema.String),
  reusable: opt(Schema.Boolean),
  ephemeral: opt(Schema.Boolean),
  expiration: opt(Timestamp),
  aclTags: opt(Schema.Array(Schema.String))
})
const LegacyExpirePreAuthKeyBody = Schema.Struct({ user: opt(Schema.String), key: opt(Schema.String) })
const CreatePreAuthKeyBody = Schema.Struct({
  user: opt(Id),
  reusable: opt(Schema.Boolean),
  ephemeral: opt(Schema.Boolean),
  expiration: opt(Timestamp),
  aclTags: opt(Schema.Array(Schema.String))
})
const IdBody = Schema.Struct({ id: Id })
const ExpireNodeBody = Schema.Struct({ expiry: opt(Timestamp), disableExpiry: opt(Schema.Boolean) })
const TagsBody = Schema.Struct({ tags: opt(Schema.Array(Schema.String)) })
const RoutesBody = Schema.Struct({ routes: opt(Schema.Array(Schema.String)) })
const CreateApiKeyBody = Schema.Struct({ expiration: opt(Timestamp) })
const ExpireApiKeyBody = Schema.Struct({ prefix: opt(Schema.String), id: opt(Id) })

const toIso = (time: string) => new Date(time).toISOString()

class BadRequest extends Error {}

const body = <S extends Schema.ConstraintDecoder<unknown>>(schema: S, raw: string): S["Type"] => {
  const decoded = decodeBody(schema, raw)
  if (Result.isFailure(decoded)) throw new BadRequest(decoded.failure)
  return decoded.success
}

const snakeCase = (name: string) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)

/** A uint64 from the path or query, refused with grpc-gateway's words. */
const idOf = (name: string, value: string | null | undefined): number => {
  if (value === null || value === undefined || value === "") return 0
  if (!/^\d+$/.test(value)) {
    throw new BadRequest(`type mismatch, parameter: ${snakeCase(name)}, error: strconv.ParseUint: parsing ${JSON.stringify(value)}: invalid syntax`)
  }
  return Number(value)
}

interface Call {
  readonly params: ReadonlyArray<string>
  readonly query: URLSearchParams
  readonly body: string
}

interface Route {
  readonly method: string
  readonly path: RegExp
  readonly handle: (state: TestnetState, call: Call) => Reply
  /** served only when the testnet imitates this generation; both when absent */
  readonly only: HeadscaleVersion | undefined
}

const route = (method: string, path: string, handle: Route["handle"], only?: HeadscaleVersion): Route => ({
  method,
  path: new RegExp(`^/api/v1${path.replace(/\{[a-zA-Z]+\}/g, "([^/]+)")}$`),
  handle,
  only
})

/** 0.25: a user by name, as its handlers looked them up (a plain error, so 500). */
const legacyUser = (state: TestnetState, name: string | null | undefined) => {
  const user = name === null || name === undefined || name === "" ? undefined : state.userByName(name)
  if (user === undefined) throw new TestnetFailure("unknown", "user not found")
  return user
}

/** What single-node answers show: 0.28+ gives a tagged node no user there (the list shows `tagged-devices`). */
const single = { withSubnetRoutes: false, taggedAsDevices: false } as const

const routes: ReadonlyArray<Route> = [
  route("GET", "/health", () => json(200, { databaseConnectivity: true }), "0.29"),

  route("GET", "/user", (state, { query }) => {
    const users = state.listUsers({ id: idOf("id", query.get("id")), name: query.get("name") ?? undefined, email: query.get("email") ?? undefined })
    return json(200, { users: users.map(userJson) })
  }),
  route("POST", "/user", (state, call) => {
    const input = body(CreateUserBody, call.body)
    const user = state.createUser({
      name: input.name,
      displayName: input.displayName ?? undefined,
      email: input.email ?? undefined,
      pictureUrl: input.pictureUrl ?? undefined
    })
    return json(200, { user: userJson(user) })
  }),
  route("POST", "/user/{oldId}/rename/{newName}", (state, { params }) =>
    json(200, { user: userJson(state.renameUser(idOf("oldId", params[0]), params[1]!)) })),
  route("DELETE", "/user/{id}", (state, { params }) => {
    state.deleteUser(idOf("id", params[0]))
    return json(200, {})
  }),

  route("POST", "/preauthkey", (state, call) => {
    const input = body(CreatePreAuthKeyBody, call.body)
    const key = state.createPreAuthKey({
      userId: input.user === undefined || input.user === null ? undefined : Number(input.user),
      reusable: input.reusable ?? false,
      ephemeral: input.ephemeral ?? false,
      expiration: input.expiration === undefined || input.expiration === null ? ZERO_TIME : toIso(input.expiration),
      aclTags: input.aclTags ?? []
    })
    return json(200, { preAuthKey: preAuthKeyJson(state, key, true) })
  }, "0.29"),
  route("GET", "/preauthkey", (state) => json(200, { preAuthKeys: state.listPreAuthKeys().map((key) => preAuthKeyJson(state, key, false)) }), "0.29"),
  route("POST", "/preauthkey/expire", (state, call) => {
    state.expirePreAuthKey(Number(body(IdBody, call.body).id))
    return json(200, {})
  }, "0.29"),
  route("DELETE", "/preauthkey", (state, { query }) => {
    state.deletePreAuthKey(idOf("id", query.get("id")))
    return json(200, {})
  }, "0.29"),

  route("POST", "/preauthkey", (state, call) => {
    const input = body(LegacyCreatePreAuthKeyBody, call.body)
    const user = legacyUser(state, input.user)
    const key = state.createPreAuthKey({
      userId: user.id,
      reusable: input.reusable ?? false,
      ephemeral: input.ephemeral ?? false,
      expiration: input.expiration === undefined || input.expiration === null ? ZERO_TIME : toIso(input.expiration),
      aclTags: input.aclTags ?? []
    })
    return json(200, { preAuthKey: preAuthKeyJson(state, key, true) })
  }, "0.25"),
  route("GET", "/preauthkey", (state, { query }) => {
    const user = legacyUser(state, query.get("user"))
    const keys = state.listPreAuthKeys().filter((key) => key.userId === user.id)
    return json(200, { preAuthKeys: keys.map((key) => preAuthKeyJson(state, key, false)) })
  }, "0.25"),
  route("POST", "/preauthkey/expire", (state, call) => {
    const input = body(LegacyExpirePreAuthKeyBody, call.body)
    const user = legacyUser(state, input.user)
    const key = state.preAuthKeyByValue(input.key ?? "")
    if (key === undefined || key.userId !== user.id) throw new TestnetFailure("not-found", "AuthKey not found")
    state.expirePreAuthKey(key.id)
    return json(200, {})
  }, "0.25"),

  route("GET", "/node", (state, { query }) => {
    const user = query.get("user") ?? ""
    // from 0.28 a tagged node belongs to no user
    const ownerOf = (node: StoredNode) =>
      !state.isLegacy && node.tags.length > 0 ? undefined : state.userOfId(node.userId)?.name
    const nodes = state.nodes().filter((node) => user === "" || ownerOf(node) === user)
    return json(200, { nodes: nodes.map((node) => nodeJson(state, node, { withSubnetRoutes: true, taggedAsDevices: true })) })
  }),
  route("GET", "/node/{nodeId}", (state, { params }) =>
    json(200, { node: nodeJson(state, state.node(idOf("nodeId", params[0])), single) })),
  route("DELETE", "/node/{nodeId}", (state, { params }) => {
    state.deleteNode(idOf("nodeId", params[0]))
    return json(200, {})
  }),
  route("POST", "/node/{nodeId}/expire", (state, call) => {
    const input = body(ExpireNodeBody, call.body)
    const node = state.expireNode(idOf("nodeId", call.params[0]), {
      expiry: input.expiry === undefined || input.expiry === null ? undefined : toIso(input.expiry),
      disableExpiry: input.disableExpiry ?? undefined
    })
    return json(200, { node: nodeJson(state, node, single) })
  }),
  route("POST", "/node/{nodeId}/rename/{newName}", (state, { params }) =>
    json(200, { node: nodeJson(state, state.renameNode(idOf("nodeId", params[0]), params[1]!), single) })),
  route("POST", "/node/{nodeId}/tags", (state, call) => {
    const node = state.setTags(idOf("nodeId", call.params[0]), body(TagsBody, call.body).tags ?? [])
    return json(200, { node: nodeJson(state, node, single) })
  }),
  route("POST", "/node/{nodeId}/approve_routes", (state, call) => {
    const node = state.approveRoutes(idOf("nodeId", call.params[0]), body(RoutesBody, call.body).routes ?? [])
    return json(200, { node: nodeJson(state, node, { withSubnetRoutes: true, taggedAsDevices: false }) })
  }, "0.29"),

  route("GET", "/routes", (state) => json(200, { routes: state.routes().map((row) => routeJson(state, row)) }), "0.25"),
  route("GET", "/node/{nodeId}/routes", (state, { params }) =>
    json(200, { routes: state.routes(idOf("nodeId", params[0])).map((row) => routeJson(state, row)) }), "0.25"),
  route("POST", "/routes/{routeId}/enable", (state, { params }) => {
    state.enableRoute(idOf("routeId", params[0]))
    return json(200, {})
  }, "0.25"),
  route("POST", "/routes/{routeId}/disable", (state, { params }) => {
    state.disableRoute(idOf("routeId", params[0]))
    return json(200, {})
  }, "0.25"),
  route("DELETE", "/routes/{routeId}", (state, { params }) => {
    state.deleteRoute(idOf("routeId", params[0]))
    return json(200, {})
  }, "0.25"),

  route("POST", "/apikey", (state, call) => {
    const input = body(CreateApiKeyBody, call.body)
    return json(200, { apiKey: state.createApiKey(input.expiration === undefined || input.expiration === null ? ZERO_TIME : toIso(input.expiration)) })
  }),
  route("GET", "/apikey", (state) => json(200, { apiKeys: state.listApiKeys().map((key) => apiKeyJson(state, key)) })),
  route("POST", "/apikey/expire", (state, call) => {
    const input = body(ExpireApiKeyBody, call.body)
    state.expireApiKey({ id: input.id === undefined || input.id === null ? undefined : Number(input.id), prefix: input.prefix ?? undefined })
    return json(200, {})
  }),
  route("DELETE", "/apikey/{prefix}", (state, { params }) => {
    state.deleteApiKey(params[0]!)
    return json(200, {})
  })
]

export interface ApiRequest {
  readonly method: string
  readonly url: URL
  readonly authorization: string | undefined
  readonly body: string
}

/**
 * `/api/v1/*` with Headscale's Bearer auth: `Unauthorized` in plain text, 401, except that 0.25
 * answers a key it cannot validate (unknown, malformed, wrong secret) with 500.
 */
export const handleHeadscaleApi = (state: TestnetState, request: ApiRequest): Reply => {
  const token = /^Bearer (.+)$/.exec(request.authorization ?? "")?.[1]
  if (token === undefined) return text(401, "Unauthorized")
  const checked = state.authenticate(token)
  if (checked !== "valid") return text(state.isLegacy && checked === "invalid" ? 500 : 401, "Unauthorized")
  const matching = routes
    .filter((candidate) => candidate.only === undefined || candidate.only === state.headscaleVersion)
    .map((candidate) => ({ candidate, match: candidate.path.exec(request.url.pathname) }))
    .filter((x) => x.match !== null)
  const found = matching.find((x) => x.candidate.method === request.method)
  if (found === undefined) {
    return matching.length > 0 ? json(405, { code: 12, message: "Method Not Allowed", details: [] }) : grpcError("not-found", "Not Found")
  }
  try {
    const params = found.match!.slice(1).map(decodeURIComponent)
    return found.candidate.handle(state, { params, query: request.url.searchParams, body: request.body })
  } catch (error) {
    if (error instanceof BadRequest) return grpcError("invalid-argument", error.message)
    // up to 0.25 a missing node or route was gorm's plain error
    if (error instanceof TestnetFailure && error.kind === "not-found" && state.isLegacy) return grpcError("unknown", "record not found")
    if (error instanceof TestnetFailure) return grpcError(error.kind, error.message)
    throw error
  }
}

/** `GET /health` and `GET /version`, which need no API key; 0.25 has no `/version` (a bare 404). */
export const handlePublic = (pathname: string, version: HeadscaleVersion = "0.29"): Reply | undefined => {
  if (pathname === "/health") return { status: 200, json: { status: "pass" }, contentType: "application/health+json; charset=utf-8", newline: true }
  if (pathname === "/version" && version === "0.25") return { status: 404, text: "", contentType: null }
  if (pathname === "/version") {
    return {
      status: 200,
      json: {
        version: `v${HEADSCALE_VERSION}`,
        commit: "containerscale-testnet",
        buildTime: protoTime("2026-07-01T00:00:00.000Z"),
        go: { version: "", os: process.platform, arch: process.arch === "x64" ? "amd64" : process.arch },
        dirty: false
      },
      newline: true
    }
  }
  return undefined
}

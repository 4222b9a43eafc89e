import { Clock, Context, Duration, Effect, Layer, Option, Predicate, Redacted, Schema, Semaphore } from "effect"
import type * as net from "node:net"
import { describeIssue } from "../issue.ts"
import {
  ControlPlaneNotFound,
  ControlPlaneRejected,
  ControlPlaneTimeout,
  ControlPlaneUnauthorized,
  ControlPlaneUnexpectedAnswer,
  ControlPlaneUnreachable,
  type ControlPlaneError,
  RouteNotAdvertised
} from "./errors.ts"
import {
  ApiKeysAnswer,
  EmptyAnswer,
  ErrorBody,
  type Node,
  NodeAnswer,
  NodesAnswer,
  PreAuthKeyAnswer,
  type Route,
  RoutesAnswer,
  UsersAnswer,
  VersionAnswer
} from "./schemas.ts"

/**
 * A version-aware client of Headscale's admin REST API (`/api/v1`, Bearer API key), over `fetch`.
 * It finds out once per client which generation it talks to (`GET /version`, else a probe of the
 * ≤0.25 routes API) and takes that generation's path for route approval, route listing and
 * pre-auth keys. Every HTTP exchange is bounded by the client's timeout; every answer is decoded
 * with Schema; the API key is `Redacted`, sent only in the Authorization header, and scrubbed from
 * anything the server says before it reaches an error.
 */

/** "0.26+": approved routes on the node (`approve_routes`). "legacy" (≤0.25): route rows enabled by id. */
export type HeadscaleGeneration = "0.26+" | "legacy"

export interface HeadscaleServerVersion {
  /** what `GET /version` reports (0.27+); undefined when the server has none (0.26 and ≤0.25) */
  readonly version: string | undefined
  readonly generation: HeadscaleGeneration
}

export interface HeadscaleOptions {
  /** the server's base URL, e.g. `https://headscale.example.com` (the API is under `/api/v1`) */
  readonly url: string
  /** a Headscale API key (`headscale apikeys create`) */
  readonly apiKey: Redacted.Redacted<string>
  /** bound on every HTTP exchange; default 10 seconds */
  readonly timeout?: Duration.Input | undefined
}

export interface HeadscaleUser {
  readonly id: string
  readonly name: string
}

/** A node in either generation's terms. */
export interface HeadscaleNode {
  /** the node id; tailscaled's `Status.Self.ID` is the same string */
  readonly id: string
  /** `nodekey:<hex>`, tailscaled's `Status.Self.PublicKey` */
  readonly nodeKey: string
  readonly machineKey: string | undefined
  /** the hostname the client reported */
  readonly name: string
  /** the MagicDNS label */
  readonly givenName: string
  readonly ipAddresses: ReadonlyArray<string>
  /** the owner (0.28+ list answers show tagged nodes as owned by `tagged-devices`) */
  readonly user: HeadscaleUser | undefined
  /** `tags` (0.28+), else the forced and valid tags */
  readonly tags: ReadonlyArray<string>
  readonly online: boolean
  readonly lastSeen: string | undefined
  readonly expiry: string | undefined
  readonly createdAt: string | undefined
  /** what the node announces (0.26+); undefined up to 0.25, where routes are rows: use `routesOf` */
  readonly advertisedRoutes: ReadonlyArray<string> | undefined
  /** the approved prefixes (0.26+); undefined up to 0.25: use `routesOf` */
  readonly approvedRoutes: ReadonlyArray<string> | undefined
}

export interface NodeRoutes {
  /** the prefixes the node announces */
  readonly advertised: ReadonlyArray<string>
  /** approved (0.26+: may include prefixes not announced yet) or enabled (≤0.25) */
  readonly approved: ReadonlyArray<string>
  /** what the node is the router for right now (0.26+ `subnetRoutes`; ≤0.25 enabled primary rows) */
  readonly serving: ReadonlyArray<string>
}

export interface ApproveRoutesResult {
  readonly generation: HeadscaleGeneration
  readonly nodeId: string
  /** the prefixes this call approved (0.26+) or enabled (≤0.25) */
  readonly approved: ReadonlyArray<string>
  /** the prefixes that already were */
  readonly alreadyApproved: ReadonlyArray<string>
}

export interface UnapproveRoutesResult {
  readonly generation: HeadscaleGeneration
  readonly nodeId: string
  /** the prefixes this call took out of the approved set (0.26+) or disabled (≤0.25) */
  readonly unapproved: ReadonlyArray<string>
  /** the prefixes that were not approved to begin with */
  readonly notApproved: ReadonlyArray<string>
}

export interface PreAuthKeyOptions {
  /** the owner: a user name, or `{ id }`. Needed up to 0.27; 0.28+ takes a key with tags and no user */
  readonly user?: string | { readonly id: string } | undefined
  readonly reusable: boolean
  /** nodes registered with it are ephemeral: deleted on logout */
  readonly ephemeral: boolean
  /** ACL tags (`tag:…`, lowercase) the key's nodes get */
  readonly tags?: ReadonlyArray<string> | undefined
  /** from now; must be positive */
  readonly expiresIn: Duration.Input
}

export interface HeadscalePreAuthKey {
  readonly id: string
  /** `hskey-auth-…` (0.28+) or the older formats */
  readonly key: Redacted.Redacted<string>
  /** the owner's name; undefined for a tagged key without user */
  readonly user: string | undefined
  readonly reusable: boolean
  readonly ephemeral: boolean
  readonly expiration: string | undefined
  readonly aclTags: ReadonlyArray<string>
}

export interface HeadscaleClient {
  /** the base URL (without user info) */
  readonly url: string
  /** `GET /version`, else the probe; cached once it succeeded */
  readonly version: () => Effect.Effect<HeadscaleServerVersion, ControlPlaneError>
  /** `GET /api/v1/node` (`?user=<name>` when given) */
  readonly nodes: (options?: { readonly user?: string | undefined }) => Effect.Effect<ReadonlyArray<HeadscaleNode>, ControlPlaneError>
  /** `GET /api/v1/node/{id}`; ControlPlaneNotFound when there is none */
  readonly node: (id: string) => Effect.Effect<HeadscaleNode, ControlPlaneError>
  /** `DELETE /api/v1/node/{id}`: true when it deleted the node, false when it was already gone */
  readonly deleteNode: (id: string) => Effect.Effect<boolean, ControlPlaneError>
  /**
   * Adds prefixes to one node's approved routes, leaving its other approvals and every other node
   * alone. 0.26+: read-modify-write of the node's approved set (approving before the node
   * announces is fine); calls of one client run one at a time, but another writer of the same
   * node in between the read and the write can still lose its change. ≤0.25: enables this node's rows for the prefixes; a prefix the node has
   * not advertised yet fails with RouteNotAdvertised (nothing enabled), to retry.
   */
  readonly approveRoutes: (nodeId: string, routes: ReadonlyArray<string>) => Effect.Effect<ApproveRoutesResult, ControlPlaneError>
  /**
   * Takes prefixes out of one node's approved routes, leaving its other approvals and every other
   * node alone (an exit route takes its sibling with it: Headscale approves them as a pair).
   * 0.26+: read-modify-write of the node's approved set, as `approveRoutes`; a prefix stays approved
   * there after the node stops announcing it. ≤0.25: disables this node's enabled rows for them.
   */
  readonly unapproveRoutes: (nodeId: string, routes: ReadonlyArray<string>) => Effect.Effect<UnapproveRoutesResult, ControlPlaneError>
  /** one node's advertised, approved and served prefixes (0.26+: from the node list, which fills `subnetRoutes`) */
  readonly routesOf: (nodeId: string) => Effect.Effect<NodeRoutes, ControlPlaneError>
  /** `POST /api/v1/preauthkey`; the key comes back `Redacted` */
  readonly createPreAuthKey: (options: PreAuthKeyOptions) => Effect.Effect<HeadscalePreAuthKey, ControlPlaneError>
}

type Method = "GET" | "POST" | "DELETE"

interface Call {
  readonly method: Method
  /** from the root, e.g. `/api/v1/node/7` */
  readonly path: string
  readonly query?: Record<string, string> | undefined
  readonly body?: unknown
  /** `/version` goes without the API key */
  readonly anonymous?: boolean | undefined
  /** the answer holds a secret (a pre-auth key): keep it out of errors */
  readonly secretAnswer?: boolean | undefined
}

interface Answer {
  readonly status: number
  readonly body: string
  readonly location: string | null
}

const REDACTED = "<redacted>"

const clip = (text: string, max = 300) => (text.length > max ? `${text.slice(0, max)}…` : text)

const endpointOf = (call: Call) => `${call.method} ${call.path}`

const isId = (id: string) => /^\d+$/.test(id)

/** The base URL without user info or a trailing slash; undefined when it is not http(s). */
const parseBase = (url: string): URL | undefined => {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return undefined
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") return undefined
  parsed.username = ""
  parsed.password = ""
  parsed.search = ""
  parsed.hash = ""
  return parsed
}

const showUrl = (url: string) => {
  const base = parseBase(url)
  return base === undefined ? "(an invalid URL)" : base.href.replace(/\/$/, "")
}

/** Every string under a `key` property of a JSON answer: pre-auth keys to scrub. */
const keysIn = (body: string): Array<string> => {
  const found: Array<string> = []
  const walk = (value: unknown): void => {
    if (Array.isArray(value)) value.forEach(walk)
    else if (Predicate.isObject(value)) {
      for (const [k, v] of Object.entries(value)) {
        if (k === "key" && Predicate.isString(v) && v.length >= 8) found.push(v)
        else walk(v)
      }
    }
  }
  try {
    walk(JSON.parse(body))
  } catch {
    // not JSON: nothing structured to find
  }
  return found
}

const decodeErrorBody = Schema.decodeUnknownOption(Schema.fromJsonString(ErrorBody))

/** The server's message: grpc-gateway's `message`, problem JSON's `detail`/`title`, else the text. */
const serverMessage = (body: string): string => {
  const decoded = decodeErrorBody(body.trim())
  if (decoded._tag === "Some") {
    const { detail, error, message, title } = decoded.value
    const said = message ?? detail ?? error ?? title
    if (said !== undefined && said !== "") return said
  }
  return body.trim()
}

const isExit = (prefix: string) => prefix === "0.0.0.0/0" || prefix === "::/0"

/** Whether the text is a CIDR prefix (`10.1.0.0/24`, `fd00::/64`); node:net is loaded on first use. */
const isPrefix = (text: string): boolean => {
  const match = /^([^/]+)\/(\d{1,3})$/.exec(text)
  if (match === null) return false
  const family = (process.getBuiltinModule("node:net") as typeof net).isIP(match[1]!)
  const bits = Number(match[2])
  return (family === 4 && bits <= 32) || (family === 6 && bits <= 128 && !match[1]!.includes("%"))
}

const unique = (items: ReadonlyArray<string>) => [...new Set(items)]

const versionGeneration = (version: string): HeadscaleGeneration => {
  const match = /^v?(\d+)\.(\d+)/.exec(version.trim())
  if (match === null) return "0.26+" // a dev build; /version exists only from 0.27
  return Number(match[1]) === 0 && Number(match[2]) <= 25 ? "legacy" : "0.26+"
}

const toNode = (node: Node): HeadscaleNode => ({
  id: node.id,
  nodeKey: node.nodeKey,
  machineKey: node.machineKey,
  name: node.name,
  givenName: node.givenName,
  ipAddresses: node.ipAddresses,
  user: node.user === undefined || node.user === null ? undefined : { id: node.user.id, name: node.user.name },
  tags: node.tags ?? unique([...(node.forcedTags ?? []), ...(node.validTags ?? [])]).sort(),
  online: node.online ?? false,
  lastSeen: node.lastSeen ?? undefined,
  expiry: node.expiry ?? undefined,
  createdAt: node.createdAt ?? undefined,
  advertisedRoutes: node.availableRoutes,
  approvedRoutes: node.approvedRoutes
})

/** Builds a client for one server; no I/O until a call runs. */
export const makeHeadscale = (options: HeadscaleOptions): HeadscaleClient => {
  const timeout = Duration.fromInputUnsafe(options.timeout ?? "10 seconds")
  const timeoutMillis = Duration.toMillis(timeout)
  const base = parseBase(options.url)
  const url = showUrl(options.url)
  let detected: HeadscaleServerVersion | undefined
  /** approvals are read-modify-write: one at a time per client, so two calls do not lose each other's additions */
  const approving = Semaphore.makeUnsafe(1)

  const scrub = (text: string, secrets: ReadonlyArray<string> = []): string => {
    let out = text
    for (const secret of [Redacted.value(options.apiKey), ...secrets]) {
      if (secret !== "") out = out.split(secret).join(REDACTED)
    }
    return out
  }

  const fields = (call: Call, extra: { status?: number | undefined; details?: string | undefined } = {}) => ({
    url,
    endpoint: endpointOf(call),
    ...extra
  })

  const rejectLocally = (call: Call, message: string) => new ControlPlaneRejected({ ...fields(call), message })

  const connectionError = (call: Call, cause: unknown): ControlPlaneError => {
    const inner = Predicate.hasProperty(cause, "cause") ? cause.cause : undefined
    const codeOf = (e: unknown) => (Predicate.hasProperty(e, "code") && Predicate.isString(e.code) ? e.code : undefined)
    const messageOf = (e: unknown) => (e instanceof Error ? e.message : e === undefined ? "" : String(e))
    const code = codeOf(inner) ?? codeOf(cause)
    const reason = scrub([messageOf(cause), messageOf(inner)].filter((m) => m !== "").join(": "))
    const hint = code === "ECONNREFUSED" || code === "ConnectionRefused"
      ? "nothing listens there: is Headscale running, and is the URL's port right?"
      : code === "ENOTFOUND" || code === "EAI_AGAIN"
      ? "the host name does not resolve: check the URL"
      : "check the URL, and that this host can reach the server"
    return new ControlPlaneUnreachable({
      ...fields(call, { details: reason }),
      message: `cannot reach Headscale at ${url} (${endpointOf(call)}): ${reason}${code === undefined ? "" : ` (${code})`}; ${hint}`
    })
  }

  /** Maps a non-2xx answer to its error class. */
  const statusError = (call: Call, answer: Answer, secrets: ReadonlyArray<string> = []): ControlPlaneError => {
    const said = clip(scrub(serverMessage(answer.body), secrets)) || "(no message)"
    const { status } = answer
    const f = fields(call, { status, details: said })
    const at = `Headscale at ${url} answered ${endpointOf(call)} with ${status}`
    // up to 0.25 a key that does not validate is 500 "Unauthorized" (401 only without one, or expired)
    if (status === 401 || status === 403 || (status === 500 && said === "Unauthorized")) {
      return new ControlPlaneUnauthorized({
        ...f,
        message: `${at} (${said}): the API key is wrong, expired or revoked; create one with \`headscale apikeys create\``
      })
    }
    if (status === 404 || ((status === 400 || status === 500) && /not found|no longer exists/i.test(said))) {
      const unknownPath = status === 404 && /^(404 page not found|not found)$/i.test(said)
      return new ControlPlaneNotFound({
        ...f,
        message: `${at}: ${said}${unknownPath ? "; this Headscale does not know the endpoint: is its version supported?" : ""}`
      })
    }
    if (status === 502 || status === 503 || status === 504) {
      return new ControlPlaneUnreachable({ ...f, message: `${at} (${said}): Headscale behind it is down or restarting; retry later` })
    }
    if (status >= 300 && status < 400) {
      return new ControlPlaneUnexpectedAnswer({
        ...f,
        message: `${at}, a redirect to ${answer.location ?? "(nowhere)"}: configure the URL it redirects to`
      })
    }
    if ((status >= 400 && status < 500) || status === 500) {
      return new ControlPlaneRejected({ ...f, message: `${at}: ${said}` })
    }
    return new ControlPlaneUnexpectedAnswer({ ...f, message: `${at}: ${said}; is this a Headscale server?` })
  }

  const unexpected = (call: Call, reason: string, body: string, secrets: ReadonlyArray<string> = []) =>
    new ControlPlaneUnexpectedAnswer({
      ...fields(call, { status: 200, details: call.secretAnswer === true ? undefined : clip(scrub(body, secrets)) }),
      message: `unexpected answer from Headscale at ${url} to ${endpointOf(call)}: ${scrub(reason, secrets)}; ` +
        `is this Headscale (and its version) supported?`
    })

  /** One request and its whole answer, bounded by the timeout; aborted if interrupted. */
  const exchange = (call: Call): Effect.Effect<Answer, ControlPlaneError> => {
    if (base === undefined) {
      return Effect.fail(rejectLocally(call, `the Headscale URL is not an http(s) URL: give one like https://headscale.example.com`))
    }
    const target = new URL(base.href)
    target.pathname = base.pathname.replace(/\/+$/, "") + call.path
    if (call.query !== undefined) target.search = new URLSearchParams(call.query).toString()
    return Effect.tryPromise({
      try: async (signal) => {
        const headers: Record<string, string> = { accept: "application/json" }
        if (call.anonymous !== true) headers["authorization"] = `Bearer ${Redacted.value(options.apiKey)}`
        if (call.body !== undefined) headers["content-type"] = "application/json"
        const response = await fetch(target, {
          method: call.method,
          headers,
          ...(call.body === undefined ? {} : { body: JSON.stringify(call.body) }),
          redirect: "manual",
          signal
        })
        return { status: response.status, body: await response.text(), location: response.headers.get("location") }
      },
      catch: (cause) => connectionError(call, cause)
    }).pipe(
      Effect.timeoutOrElse({
        duration: timeout,
        orElse: () =>
          Effect.fail(
            new ControlPlaneTimeout({
              ...fields(call),
              timeoutMillis,
              message: `Headscale at ${url} did not answer ${endpointOf(call)} within ${Duration.format(timeout)}: ` +
                `check that the server is up and reachable from here, or allow a longer timeout`
            })
          )
      })
    )
  }

  const decode = <S extends Schema.Top & { readonly DecodingServices: never }>(call: Call, schema: S, body: string) =>
    Schema.decodeUnknownEffect(Schema.fromJsonString(schema))(body).pipe(
      Effect.mapError((e) => {
        return unexpected(call, describeIssue(e.issue), body, keysIn(body))
      })
    )

  /** A 2xx answer decoded with `schema`, or the error its status maps to. */
  const json = <S extends Schema.Top & { readonly DecodingServices: never }>(call: Call, schema: S) =>
    Effect.flatMap(exchange(call), (answer): Effect.Effect<S["Type"], ControlPlaneError> =>
      answer.status >= 200 && answer.status < 300
        ? decode(call, schema, answer.body)
        : Effect.fail(statusError(call, answer, call.secretAnswer === true ? keysIn(answer.body) : [])))

  const checkId = (call: Call, what: string, id: string) =>
    isId(id) ? Effect.void : Effect.fail(rejectLocally(call, `invalid ${what} ${JSON.stringify(id)}: give the decimal id (tailscaled's Status.Self.ID)`))

  // Version detection

  const detect = Effect.gen(function*() {
    const versionCall: Call = { method: "GET", path: "/version", anonymous: true }
    const answer = yield* exchange(versionCall)
    if (answer.status === 200) {
      const { version } = yield* decode(versionCall, VersionAnswer, answer.body)
      return { version, generation: versionGeneration(version) } satisfies HeadscaleServerVersion
    }
    if (answer.status !== 404) return yield* statusError(versionCall, answer)
    // before 0.27: the routes API answers up to 0.25
    const routesCall: Call = { method: "GET", path: "/api/v1/routes" }
    const probe = yield* exchange(routesCall)
    if (probe.status === 200) {
      yield* decode(routesCall, RoutesAnswer, probe.body)
      return { version: undefined, generation: "legacy" } satisfies HeadscaleServerVersion
    }
    if (probe.status !== 404) return yield* statusError(routesCall, probe)
    // 0.26 has neither; make sure this is a Headscale API at all
    const keysCall: Call = { method: "GET", path: "/api/v1/apikey" }
    const keys = yield* exchange(keysCall)
    if (keys.status !== 200) {
      const error = statusError(keysCall, keys)
      if (error._tag !== "ControlPlaneNotFound") return yield* error
      return yield* new ControlPlaneUnexpectedAnswer({
        ...fields(keysCall, { status: keys.status }),
        message: `${url} has no /version, no /api/v1/routes and no /api/v1/apikey: it is not a Headscale server ` +
          `(or one older than 0.23); check the URL`
      })
    }
    yield* decode(keysCall, ApiKeysAnswer, keys.body)
    return { version: undefined, generation: "0.26+" } satisfies HeadscaleServerVersion
  })

  const version: HeadscaleClient["version"] = () =>
    detected !== undefined ? Effect.succeed(detected) : Effect.tap(detect, (found) => Effect.sync(() => (detected = found)))

  // Nodes

  const nodeCall = (id: string): Call => ({ method: "GET", path: `/api/v1/node/${id}` })

  const nodes: HeadscaleClient["nodes"] = (opts) =>
    json(
      { method: "GET", path: "/api/v1/node", query: opts?.user === undefined ? undefined : { user: opts.user } },
      NodesAnswer
    ).pipe(Effect.map((answer) => answer.nodes.map(toNode)))

  const node: HeadscaleClient["node"] = (id) => {
    const call = nodeCall(id)
    return checkId(call, "node id", id).pipe(
      Effect.andThen(json(call, NodeAnswer)),
      Effect.map((answer) => toNode(answer.node))
    )
  }

  const deleteNode: HeadscaleClient["deleteNode"] = (id) => {
    const call: Call = { method: "DELETE", path: `/api/v1/node/${id}` }
    return checkId(call, "node id", id).pipe(
      Effect.andThen(json(call, EmptyAnswer)),
      Effect.as(true),
      Effect.catchTag("ControlPlaneNotFound", () => Effect.succeed(false))
    )
  }

  // Routes

  const nodeRoutesCall = (nodeId: string): Call => ({ method: "GET", path: `/api/v1/node/${nodeId}/routes` })

  /** ≤0.25: this node's rows (the server filters; the embedded node id is checked too). */
  const rowsOf = (nodeId: string) =>
    json(nodeRoutesCall(nodeId), RoutesAnswer).pipe(
      Effect.map((answer) => answer.routes.filter((row) => row.node === undefined || row.node === null || row.node.id === nodeId))
    )

  const checkRoutes = (call: Call, routes: ReadonlyArray<string>) => {
    const bad = routes.filter((route) => !isPrefix(route))
    return bad.length === 0
      ? Effect.void
      : Effect.fail(rejectLocally(call, `not CIDR prefixes: ${bad.map((r) => JSON.stringify(r)).join(", ")}; give routes like 10.1.0.0/24`))
  }

  /** A node's approved routes (0.26+), read fresh before they are replaced as a whole. */
  const approvedRoutesOf = (nodeId: string) =>
    Effect.gen(function*() {
      const call = nodeCall(nodeId)
      const current = (yield* json(call, NodeAnswer)).node
      if (current.approvedRoutes === undefined) {
        return yield* unexpected(call, "the node has no approvedRoutes field, which 0.26+ always sends", JSON.stringify({ id: current.id }))
      }
      return current.approvedRoutes
    })

  const approveModern = (nodeId: string, wanted: ReadonlyArray<string>) =>
    Effect.gen(function*() {
      const had = yield* approvedRoutesOf(nodeId)
      const alreadyApproved = wanted.filter((route) => had.includes(route))
      const approved = wanted.filter((route) => !had.includes(route))
      if (approved.length === 0) return { generation: "0.26+" as const, nodeId, approved, alreadyApproved }
      const post: Call = { method: "POST", path: `/api/v1/node/${nodeId}/approve_routes`, body: { routes: unique([...had, ...approved]) } }
      const after = (yield* json(post, NodeAnswer)).node
      const missing = wanted.filter((route) => !(after.approvedRoutes ?? []).includes(route))
      if (missing.length > 0) {
        return yield* unexpected(post, `the node's approved routes lack ${missing.join(", ")} after approval`, JSON.stringify(after.approvedRoutes ?? null))
      }
      return { generation: "0.26+" as const, nodeId, approved, alreadyApproved }
    })

  const approveLegacy = (nodeId: string, wanted: ReadonlyArray<string>) =>
    Effect.gen(function*() {
      const rows = yield* rowsOf(nodeId)
      const alreadyApproved: Array<string> = []
      const toEnable: Array<Route> = []
      const notAdvertised: Array<string> = []
      for (const prefix of wanted) {
        const matching = rows.filter((row) => row.prefix === prefix && row.advertised)
        if (matching.some((row) => row.enabled)) alreadyApproved.push(prefix)
        else if (matching[0] !== undefined) toEnable.push(matching[0])
        else notAdvertised.push(prefix)
      }
      if (notAdvertised.length > 0) {
        return yield* new RouteNotAdvertised({
          ...fields(nodeRoutesCall(nodeId)),
          nodeId,
          routes: notAdvertised,
          message: `node ${nodeId} has not advertised ${notAdvertised.join(", ")} yet, and Headscale ≤0.25 can only enable ` +
            `an advertised route; nothing was enabled. Retry once the node announces it (tailscaled: AdvertiseRoutes)`
        })
      }
      // enabling one exit route enables both, so the second may already be on; the server takes it again
      for (const row of toEnable) yield* json({ method: "POST", path: `/api/v1/routes/${row.id}/enable` }, EmptyAnswer)
      return { generation: "legacy" as const, nodeId, approved: toEnable.map((row) => row.prefix), alreadyApproved }
    })

  const unapproveModern = (nodeId: string, unwanted: ReadonlyArray<string>) =>
    Effect.gen(function*() {
      const had = yield* approvedRoutesOf(nodeId)
      const dropped = unwanted.some(isExit) ? unique([...unwanted, "0.0.0.0/0", "::/0"]) : unwanted
      const unapproved = had.filter((route) => dropped.includes(route))
      const notApproved = unwanted.filter((route) => !had.includes(route))
      if (unapproved.length === 0) return { generation: "0.26+" as const, nodeId, unapproved, notApproved }
      const post: Call = {
        method: "POST",
        path: `/api/v1/node/${nodeId}/approve_routes`,
        body: { routes: had.filter((route) => !dropped.includes(route)) }
      }
      const after = (yield* json(post, NodeAnswer)).node
      const left = (after.approvedRoutes ?? []).filter((route) => dropped.includes(route))
      if (left.length > 0) {
        return yield* unexpected(post, `the node's approved routes still hold ${left.join(", ")} after unapproval`, JSON.stringify(after.approvedRoutes ?? null))
      }
      return { generation: "0.26+" as const, nodeId, unapproved, notApproved }
    })

  const unapproveLegacy = (nodeId: string, unwanted: ReadonlyArray<string>) =>
    Effect.gen(function*() {
      const rows = yield* rowsOf(nodeId)
      const toDisable = rows.filter((row) => row.enabled && unwanted.includes(row.prefix))
      for (const row of toDisable) yield* json({ method: "POST", path: `/api/v1/routes/${row.id}/disable` }, EmptyAnswer)
      const unapproved = unique(toDisable.map((row) => row.prefix))
      return { generation: "legacy" as const, nodeId, unapproved, notApproved: unwanted.filter((route) => !unapproved.includes(route)) }
    })

  /** Checks the id and routes, finds the generation, and runs one route change at a time. */
  const changeRoutes = <A>(
    nodeId: string,
    routes: ReadonlyArray<string>,
    nothing: (generation: HeadscaleGeneration) => A,
    change: (generation: HeadscaleGeneration, routes: ReadonlyArray<string>) => Effect.Effect<A, ControlPlaneError>
  ): Effect.Effect<A, ControlPlaneError> =>
    Effect.gen(function*() {
      const call: Call = { method: "POST", path: `/api/v1/node/${nodeId}/approve_routes` }
      yield* checkId(call, "node id", nodeId)
      yield* checkRoutes(call, routes)
      const { generation } = yield* version()
      const distinct = unique(routes)
      if (distinct.length === 0) return nothing(generation)
      return yield* approving.withPermit(change(generation, distinct))
    })

  const unapproveRoutes: HeadscaleClient["unapproveRoutes"] = (nodeId, routes) =>
    changeRoutes<UnapproveRoutesResult>(
      nodeId,
      routes,
      (generation) => ({ generation, nodeId, unapproved: [], notApproved: [] }),
      (generation, unwanted) => generation === "legacy" ? unapproveLegacy(nodeId, unwanted) : unapproveModern(nodeId, unwanted)
    )

  const approveRoutes: HeadscaleClient["approveRoutes"] = (nodeId, routes) =>
    changeRoutes<ApproveRoutesResult>(
      nodeId,
      routes,
      (generation) => ({ generation, nodeId, approved: [], alreadyApproved: [] }),
      (generation, wanted) => generation === "legacy" ? approveLegacy(nodeId, wanted) : approveModern(nodeId, wanted)
    )

  const routesOf: HeadscaleClient["routesOf"] = (nodeId) =>
    Effect.gen(function*() {
      const call = nodeRoutesCall(nodeId)
      yield* checkId(call, "node id", nodeId)
      const { generation } = yield* version()
      if (generation === "legacy") {
        const rows = yield* rowsOf(nodeId)
        return {
          advertised: unique(rows.filter((row) => row.advertised).map((row) => row.prefix)),
          approved: unique(rows.filter((row) => row.advertised && row.enabled).map((row) => row.prefix)),
          serving: unique(
            rows.filter((row) => row.advertised && row.enabled && (row.isPrimary === true || isExit(row.prefix))).map((row) => row.prefix)
          )
        }
      }
      // a single GET leaves subnetRoutes empty; the list fills it
      const listCall: Call = { method: "GET", path: "/api/v1/node" }
      const found = (yield* json(listCall, NodesAnswer)).nodes.find((candidate) => candidate.id === nodeId)
      if (found === undefined) {
        return yield* new ControlPlaneNotFound({ ...fields(listCall), message: `Headscale at ${url} has no node ${nodeId}` })
      }
      return { advertised: found.availableRoutes ?? [], approved: found.approvedRoutes ?? [], serving: found.subnetRoutes ?? [] }
    })

  // Pre-auth keys

  const userByName = (name: string) => {
    const call: Call = { method: "GET", path: "/api/v1/user", query: { name } }
    return json(call, UsersAnswer).pipe(
      Effect.flatMap((answer) => {
        const user = answer.users.find((candidate) => candidate.name === name)
        return user !== undefined
          ? Effect.succeed(user)
          : Effect.fail(new ControlPlaneNotFound({ ...fields(call), message: `Headscale at ${url} has no user ${JSON.stringify(name)}: create it (POST /api/v1/user) or name another` }))
      })
    )
  }

  const userById = (id: string) => {
    const call: Call = { method: "GET", path: "/api/v1/user", query: { id } }
    return json(call, UsersAnswer).pipe(
      Effect.flatMap((answer) => {
        const user = answer.users.find((candidate) => candidate.id === id)
        return user !== undefined
          ? Effect.succeed(user)
          : Effect.fail(new ControlPlaneNotFound({ ...fields(call), message: `Headscale at ${url} has no user with id ${id}` }))
      })
    )
  }

  const createPreAuthKey: HeadscaleClient["createPreAuthKey"] = (opts) =>
    Effect.gen(function*() {
      const call: Call = { method: "POST", path: "/api/v1/preauthkey", secretAnswer: true }
      const lifetimeMillis = Option.match(Duration.fromInput(opts.expiresIn), { onNone: () => NaN, onSome: Duration.toMillis })
      if (!(lifetimeMillis > 0) || !Number.isFinite(lifetimeMillis)) {
        return yield* rejectLocally(call, `expiresIn must be a positive, finite duration (Headscale treats a key without a future expiration as expired)`)
      }
      const tags = unique(opts.tags ?? [])
      const { generation } = yield* version()
      const ref = opts.user
      let user: string | undefined
      if (generation === "legacy") {
        if (ref === undefined) {
          return yield* rejectLocally(call, `Headscale ≤0.25 needs a user for a pre-auth key: give options.user`)
        }
        user = Predicate.isString(ref) ? ref : (yield* userById(ref.id)).name
      } else if (ref !== undefined) {
        user = Predicate.isString(ref) ? (yield* userByName(ref)).id : ref.id
        if (!isId(user)) return yield* rejectLocally(call, `invalid user id ${JSON.stringify(user)}: give a decimal id`)
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
      const { preAuthKey } = yield* json({ ...call, body }, PreAuthKeyAnswer)
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

  return { url, version, nodes, node, deleteNode, approveRoutes, unapproveRoutes, routesOf, createPreAuthKey }
}

/** One Headscale admin API client for the program; `ControlPlane.layer(options)` builds it (no I/O). */
export class ControlPlane extends Context.Service<ControlPlane, HeadscaleClient>()("@containerscale/core/ControlPlane") {
  static readonly layer = (options: HeadscaleOptions): Layer.Layer<ControlPlane> => Layer.sync(ControlPlane, () => makeHeadscale(options))
}

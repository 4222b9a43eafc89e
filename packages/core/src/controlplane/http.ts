import { Duration, Effect, Predicate, Redacted, Schema } from "effect"
import { clip, scrub as scrubAll } from "../http/redact.ts"
import * as Http from "../http/transport.ts"
import { describeIssue } from "../issue.ts"
import {
  ControlPlaneNotFound,
  ControlPlaneRejected,
  ControlPlaneTimeout,
  ControlPlaneUnauthorized,
  ControlPlaneUnexpectedAnswer,
  ControlPlaneUnreachable,
  type ControlPlaneError
} from "./errors.ts"
import { ErrorBody } from "./schemas.ts"
import type { HeadscaleOptions } from "./types.ts"

/**
 * The Headscale client's side of HTTP: one call of the admin API over the shared transport
 * (`../http/transport.ts`), with the Bearer API key, bounded by the client's timeout, and the
 * answer's status mapped to a `ControlPlaneError` in Headscale's terms (which differ by release:
 * see `statusError`). The API key is `Redacted`, sent only in the Authorization header, and
 * scrubbed (with any pre-auth key an answer holds) from anything the server says before it
 * reaches an error.
 */

type Method = "GET" | "POST" | "DELETE"

export interface Call {
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

export interface Answer {
  readonly status: number
  readonly body: string
  readonly location: string | undefined
}

type Decodable = Schema.Top & { readonly DecodingServices: never }

export interface HeadscaleHttp {
  /** the base URL as shown: without user info or a trailing slash */
  readonly url: string
  /** One request and its whole answer, whatever its status. */
  readonly exchange: (call: Call) => Effect.Effect<Answer, ControlPlaneError>
  /** A 2xx answer decoded with `schema`, or the error its status maps to. */
  readonly json: <S extends Decodable>(call: Call, schema: S) => Effect.Effect<S["Type"], ControlPlaneError>
  readonly decode: <S extends Decodable>(call: Call, schema: S, body: string) => Effect.Effect<S["Type"], ControlPlaneError>
  /** Maps a non-2xx answer to its error class. */
  readonly statusError: (call: Call, answer: Answer) => ControlPlaneError
  /** a 200 the client cannot use */
  readonly unexpected: (call: Call, reason: string, body: string) => ControlPlaneUnexpectedAnswer
  /** the client refuses the call before sending it */
  readonly rejectLocally: (call: Call, message: string) => ControlPlaneRejected
  /** the fields every error of the call has */
  readonly fields: (call: Call, extra?: { status?: number | undefined }) => { url: string; endpoint: string; status?: number | undefined }
  /** a decimal id (tailscaled's Status.Self.ID), or the call is rejected */
  readonly checkId: (call: Call, what: string, id: string) => Effect.Effect<void, ControlPlaneRejected>
}

export const endpointOf = (call: Call) => `${call.method} ${call.path}`

export const isId = (id: string) => /^\d+$/.test(id)

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

/** The HTTP side of a client for one server; no I/O until a call runs. */
export const makeHeadscaleHttp = (options: HeadscaleOptions): HeadscaleHttp => {
  const timeout = Duration.fromInputUnsafe(options.timeout ?? "10 seconds")
  const timeoutMillis = Duration.toMillis(timeout)
  const base = parseBase(options.url)
  const url = showUrl(options.url)

  const scrub = (text: string, secrets: ReadonlyArray<string> = []): string => scrubAll(text, [Redacted.value(options.apiKey), ...secrets])

  const fields = (call: Call, extra: { status?: number | undefined; details?: string | undefined } = {}) => ({
    url,
    endpoint: endpointOf(call),
    ...extra
  })

  const rejectLocally = (call: Call, message: string) => new ControlPlaneRejected({ ...fields(call), message })

  const failed = (call: Call) => (failure: Http.HttpFailure): ControlPlaneError => {
    if (failure._tag === "HttpTimedOut") {
      return new ControlPlaneTimeout({
        ...fields(call),
        timeoutMillis,
        message: `Headscale at ${url} did not answer ${endpointOf(call)} within ${Duration.format(timeout)}: ` +
          `check that the server is up and reachable from here, or allow a longer timeout`
      })
    }
    const { code } = failure
    const reason = scrub(failure.reason)
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

  const statusErrorWith = (call: Call, answer: Answer, secrets: ReadonlyArray<string>): ControlPlaneError => {
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

  const unexpectedWith = (call: Call, reason: string, body: string, secrets: ReadonlyArray<string>) =>
    new ControlPlaneUnexpectedAnswer({
      ...fields(call, { status: 200, details: call.secretAnswer === true ? undefined : clip(scrub(body, secrets)) }),
      message: `unexpected answer from Headscale at ${url} to ${endpointOf(call)}: ${scrub(reason, secrets)}; ` +
        `is this Headscale (and its version) supported?`
    })

  const exchange = (call: Call): Effect.Effect<Answer, ControlPlaneError> => {
    if (base === undefined) {
      return Effect.fail(rejectLocally(call, `the Headscale URL is not an http(s) URL: give one like https://headscale.example.com`))
    }
    const target = new URL(base.href)
    target.pathname = base.pathname.replace(/\/+$/, "") + call.path
    if (call.query !== undefined) target.search = new URLSearchParams(call.query).toString()
    return Effect.suspend(() => {
      const headers: Record<string, string> = { accept: "application/json" }
      if (call.anonymous !== true) headers["authorization"] = `Bearer ${Redacted.value(options.apiKey)}`
      if (call.body !== undefined) headers["content-type"] = "application/json"
      const body = call.body === undefined ? undefined : JSON.stringify(call.body)
      return Http.exchange({ method: call.method, target, headers, body }, timeout)
    }).pipe(
      Effect.map((answer): Answer => {
        const { location } = answer.headers
        return { status: answer.status, body: answer.body, location }
      }),
      Effect.mapError(failed(call))
    )
  }

  const decode = <S extends Decodable>(call: Call, schema: S, body: string) =>
    Schema.decodeUnknownEffect(Schema.fromJsonString(schema))(body).pipe(
      Effect.mapError((e) => unexpectedWith(call, describeIssue(e.issue), body, keysIn(body)))
    )

  const json = <S extends Decodable>(call: Call, schema: S) =>
    Effect.flatMap(exchange(call), (answer): Effect.Effect<S["Type"], ControlPlaneError> =>
      answer.status >= 200 && answer.status < 300
        ? decode(call, schema, answer.body)
        : Effect.fail(statusErrorWith(call, answer, call.secretAnswer === true ? keysIn(answer.body) : [])))

  const checkId = (call: Call, what: string, id: string) =>
    isId(id) ? Effect.void : Effect.fail(rejectLocally(call, `invalid ${what} ${JSON.stringify(id)}: give the decimal id (tailscaled's Status.Self.ID)`))

  return {
    url,
    exchange,
    json,
    decode,
    statusError: (call, answer) => statusErrorWith(call, answer, []),
    unexpected: (call, reason, body) => unexpectedWith(call, reason, body, []),
    rejectLocally,
    fields,
    checkId
  }
}

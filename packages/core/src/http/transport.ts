import { Data, Deferred, type Duration, Effect, Predicate, type Scope } from "effect"
import type * as http from "node:http"

/**
 * The HTTP/1.1 transport the core's clients share: tailscaled's LocalAPI over its unix socket and
 * Headscale's admin API over http(s). It is node:http (node:https for https URLs), loaded on first
 * use: loading node:http costs a compiled plugin ~40 ms of start-up even in router mode, so a
 * process that never makes a request never pays it (`fetch` cannot talk to a unix socket, and
 * loads more). One connection per request (no agent, no keep-alive), so nothing is left open when
 * a short-lived process exits. Every request is bounded by a timeout and destroyed when
 * interrupted. Failures come back in one shape, `HttpFailure`, raw: each client scrubs its secrets
 * and maps them (and the statuses) to its own errors.
 */

/** Where a request goes: a unix socket and a path on it, or an http(s) URL. */
export type HttpTarget =
  | { readonly socketPath: string; readonly path: string }
  | URL

export interface HttpRequest {
  readonly method: string
  readonly target: HttpTarget
  /** `Content-Length` is added for a body */
  readonly headers: Readonly<Record<string, string>>
  readonly body?: string | undefined
}

export interface HttpAnswer {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
}

/** An answer whose body is still coming (`open`). */
export interface HttpStream {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  /** the body as it arrives; iterate once. It fails if the connection breaks */
  readonly body: AsyncIterable<Uint8Array>
  /** or the whole body as text, bounded by the timeout */
  readonly text: Effect.Effect<string, HttpFailure>
}

/** No connection, or it broke before the answer was complete. */
export class HttpConnectionFailed extends Data.TaggedError("HttpConnectionFailed")<{
  /** the system's code (ECONNREFUSED, ENOENT, EACCES, ENOTFOUND, a TLS code…), when there is one */
  readonly code: string | undefined
  /** what the runtime said, unscrubbed */
  readonly reason: string
}> {}

/** No (complete) answer within the timeout; the request was destroyed. */
export class HttpTimedOut extends Data.TaggedError("HttpTimedOut")<{
  readonly timeout: Duration.Duration
}> {}

export type HttpFailure = HttpConnectionFailed | HttpTimedOut

const codeOf = (e: unknown) => (Predicate.hasProperty(e, "code") && Predicate.isString(e.code) ? e.code : undefined)

/** An error's message; an AggregateError's (a dual-stack connect) is empty: then its errors'. */
const messageOf = (e: unknown): string => {
  if (!(e instanceof Error)) return e === undefined ? "" : String(e)
  if (e.message !== "" || !(e instanceof AggregateError)) return e.message
  return [...new Set(e.errors.map(messageOf))].join("; ")
}

/** The failure of a runtime error (and of the error it wraps, as Bun's and undici's do). */
const connectionFailed = (cause: unknown): HttpConnectionFailed => {
  const inner = Predicate.hasProperty(cause, "cause") ? cause.cause : undefined
  return new HttpConnectionFailed({
    code: codeOf(cause) ?? codeOf(inner),
    reason: [messageOf(cause), messageOf(inner)].filter((m) => m !== "").join(": ") || "the connection failed"
  })
}

/** node:http and node:https, loaded on first use (see above). */
const moduleFor = (target: HttpTarget) =>
  process.getBuiltinModule(target instanceof URL && target.protocol === "https:" ? "node:https" : "node:http") as typeof http

const send = (request: HttpRequest): http.ClientRequest => {
  const headers: Record<string, string | number> = { ...request.headers }
  if (request.body !== undefined) headers["Content-Length"] = Buffer.byteLength(request.body)
  const { target } = request
  const req = target instanceof URL
    ? moduleFor(target).request(target, { method: request.method, headers, agent: false })
    : moduleFor(target).request({ socketPath: target.socketPath, path: target.path, method: request.method, headers, agent: false })
  req.end(request.body)
  return req
}

const bounded = <A>(timeout: Duration.Duration, effect: Effect.Effect<A, HttpFailure>) =>
  Effect.timeoutOrElse(effect, { duration: timeout, orElse: () => Effect.fail(new HttpTimedOut({ timeout })) })

/** Collects the body as text; `done` gets it, or the failure that broke it. */
const collect = (res: http.IncomingMessage, done: (body: Effect.Effect<string, HttpFailure>) => void) => {
  const chunks: Array<Buffer> = []
  res.on("data", (chunk: Buffer) => chunks.push(chunk))
  res.on("end", () => done(Effect.succeed(Buffer.concat(chunks).toString("utf8"))))
  res.on("error", (e) => done(Effect.fail(connectionFailed(e))))
}

/** One request and its whole answer, bounded by `timeout`; the request is destroyed if interrupted. */
export const exchange = (request: HttpRequest, timeout: Duration.Duration): Effect.Effect<HttpAnswer, HttpFailure> =>
  bounded(
    timeout,
    Effect.callback<HttpAnswer, HttpFailure>((resume) => {
      const req = send(request)
      req.on("error", (e) => resume(Effect.fail(connectionFailed(e))))
      req.on("response", (res) =>
        collect(res, (body) => resume(Effect.map(body, (text) => ({ status: res.statusCode ?? 0, headers: res.headers, body: text })))))
      return Effect.sync(() => req.destroy())
    })
  )

/**
 * A request whose answer is read as it comes: completes once the headers arrived (within
 * `timeout`). Listeners go on in the same tick as the request, so nothing early is missed; the
 * request is destroyed when the scope closes.
 */
export const open = (request: HttpRequest, timeout: Duration.Duration): Effect.Effect<HttpStream, HttpFailure, Scope.Scope> =>
  Effect.gen(function*() {
    const { req, headers } = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const headers = Deferred.makeUnsafe<http.IncomingMessage, HttpFailure>()
        const req = send(request)
        req.on("error", (e) => Deferred.doneUnsafe(headers, Effect.fail(connectionFailed(e))))
        req.on("response", (res) => {
          // later failures surface through the body's iteration, or `text`
          res.on("error", () => {})
          Deferred.doneUnsafe(headers, Effect.succeed(res))
        })
        return { req, headers }
      }),
      ({ req }) => Effect.sync(() => req.destroy())
    )
    const res = yield* bounded(timeout, Deferred.await(headers)).pipe(Effect.onError(() => Effect.sync(() => req.destroy())))
    return { status: res.statusCode ?? 0, headers: res.headers, body: res as AsyncIterable<Uint8Array>, text: bounded(timeout, Effect.callback<string, HttpFailure>((resume) => collect(res, resume))) }
  })

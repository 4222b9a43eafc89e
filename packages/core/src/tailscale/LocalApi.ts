import { Context, Duration, Effect, Layer, Predicate, Redacted, Schema, type Scope, Stream } from "effect"
import { clip, scrub as scrubAll } from "../http/redact.ts"
import * as Http from "../http/transport.ts"
import { describeIssue } from "../issue.ts"
import {
  LocalApiAccessDenied,
  LocalApiBadRequest,
  LocalApiDaemonError,
  type LocalApiError,
  LocalApiTimeout,
  LocalApiUnexpectedAnswer,
  TailscaledNotRunning
} from "./localApiErrors.ts"
import { type MaskedPrefs, Notify, Prefs, Status, WhoIs } from "./localApiSchemas.ts"

/**
 * A typed client of tailscaled's LocalAPI: HTTP/1.1 over its unix socket, `Host:
 * local-tailscaled.sock`, no Origin/Referer. Every call is bounded by the client's timeout, since
 * tailscaled holds requests until its backend is ready and sets no timeout of its own. One
 * connection per call (no agent), so nothing is left open when a short-lived process exits: the
 * shared transport (`../http/transport.ts`, node:http loaded on first use) does the HTTP.
 */

/** tailscaled's default socket on Linux (the systemd unit uses /run/tailscale/tailscaled.sock). */
export const defaultLocalApiSocket = "/var/run/tailscale/tailscaled.sock"

const HOST = "local-tailscaled.sock"
const PREFIX = "/localapi/v0/"

export interface LocalApiOptions {
  /** path of tailscaled's unix socket, e.g. `defaultLocalApiSocket` */
  readonly socket: string
  /** bound on every call (for the IPN bus: until its headers arrive); default 10 seconds */
  readonly timeout?: Duration.Input | undefined
  /** sent as `Tailscale-Cap` when set (tailscaled does not require it) */
  readonly capabilityVersion?: number | undefined
}

export interface StartOptions {
  /** sent as `AuthKey` in the body, nowhere else */
  readonly authKey?: Redacted.Redacted<string> | undefined
  /** replaces all stored prefs (except Persist): build it from `newPrefs()` */
  readonly updatePrefs?: Prefs | undefined
}

export interface LocalApiClient {
  readonly socket: string
  /** GET status; `peers: false` asks for `?peers=false` (then `Peer` is null) */
  readonly status: (options?: { readonly peers?: boolean | undefined }) => Effect.Effect<Status, LocalApiError>
  /** GET prefs */
  readonly prefs: () => Effect.Effect<Prefs, LocalApiError>
  /** PATCH prefs with `<Key>Set` flags (see `maskPrefs`); answers the new full prefs */
  readonly editPrefs: (masked: MaskedPrefs) => Effect.Effect<Prefs, LocalApiError>
  /** POST check-prefs: fails with LocalApiBadRequest carrying the daemon's reason when invalid */
  readonly checkPrefs: (prefs: Prefs) => Effect.Effect<void, LocalApiError>
  /** POST start `{FrontendLogID, UpdatePrefs, AuthKey}` (204) */
  readonly start: (options: StartOptions) => Effect.Effect<void, LocalApiError>
  /** POST login-interactive (204); with a key stored by `start` it registers without a URL */
  readonly loginInteractive: () => Effect.Effect<void, LocalApiError>
  /** POST logout (204) */
  readonly logout: () => Effect.Effect<void, LocalApiError>
  /** GET whois?addr= (IP, IP:port or nodekey:<hex>); undefined when nothing matches */
  readonly whois: (
    addr: string,
    options?: { readonly proto?: "tcp" | "udp" | undefined }
  ) => Effect.Effect<WhoIs | undefined, LocalApiError>
  /**
   * GET watch-ipn-bus?mask=: completes once the response headers arrived (the watch is then
   * registered, so open it before `start`), with a Stream of the Notify lines. The stream can be
   * run once; it ends when the daemon closes the bus, fails if the connection breaks, and the
   * request is aborted when the scope closes.
   */
  readonly watchIpnBus: (
    mask: number
  ) => Effect.Effect<Stream.Stream<Notify, LocalApiError>, LocalApiError, Scope.Scope>
}

type Method = "GET" | "POST" | "PATCH"

interface Call {
  readonly method: Method
  readonly name: string
  readonly query?: Record<string, string> | undefined
  /** renders the JSON body at send time, so a secret in it lives only in the request */
  readonly body?: (() => string) | undefined
  /** scrubbed from every message built from the daemon's answer */
  readonly secret?: Redacted.Redacted<string> | undefined
}

interface Ctx {
  readonly socket: string
  readonly endpoint: string
  readonly secret: Redacted.Redacted<string> | undefined
}

const pathOf = (call: Call) => {
  const query = call.query === undefined ? "" : new URLSearchParams(call.query).toString()
  return PREFIX + call.name + (query === "" ? "" : `?${query}`)
}

const scrub = (text: string, secret: Redacted.Redacted<string> | undefined): string =>
  secret === undefined ? text : scrubAll(text, [Redacted.value(secret)])

/** Go's rule: a JSON body with an `error` key (any case) gives its value, otherwise the trimmed text. */
export const daemonMessage = (body: string): string => {
  const text = body.trim()
  if (text.startsWith("{")) {
    try {
      const json: unknown = JSON.parse(text)
      if (Predicate.isObject(json)) {
        for (const [key, value] of Object.entries(json)) {
          if (key.toLowerCase() === "error" && Predicate.isString(value)) return value
        }
      }
    } catch {
      // not JSON: use the text
    }
  }
  return text
}

const connectionError = (ctx: Ctx, failure: Http.HttpConnectionFailed): LocalApiError => {
  const { code } = failure
  const reason = scrub(failure.reason, ctx.secret)
  const fields = { socket: ctx.socket, endpoint: ctx.endpoint, details: reason }
  switch (code) {
    case "ENOENT":
      return new TailscaledNotRunning({
        ...fields,
        message: `no tailscaled socket at ${ctx.socket} (${ctx.endpoint}): is tailscaled running, ` +
          `and started with --socket=${ctx.socket}?`
      })
    case "ECONNREFUSED":
    case "ENOTSOCK":
      return new TailscaledNotRunning({
        ...fields,
        message: `nothing accepts connections on ${ctx.socket} (${code}, ${ctx.endpoint}): is tailscaled running? ` +
          `A socket file is left behind when it dies`
      })
    case "EACCES":
    case "EPERM":
      return new LocalApiAccessDenied({
        ...fields,
        message: `no permission to open the tailscaled socket ${ctx.socket} (${ctx.endpoint}): ` +
          `run as root or as the daemon's user`
      })
    default:
      return new LocalApiDaemonError({
        ...fields,
        message: `the connection to tailscaled at ${ctx.socket} failed during ${ctx.endpoint}: ${reason}`
      })
  }
}

/** Maps a non-2xx answer to its error class. */
const statusError = (ctx: Ctx, answer: Pick<Http.HttpAnswer, "status" | "body">): LocalApiError => {
  const said = clip(scrub(daemonMessage(answer.body), ctx.secret)) || "(no message)"
  const fields = { socket: ctx.socket, endpoint: ctx.endpoint, status: answer.status, details: said }
  const { status } = answer
  if (status === 401 || status === 403) {
    return new LocalApiAccessDenied({
      ...fields,
      message: `tailscaled at ${ctx.socket} denied ${ctx.endpoint} (${status}: ${said}): run as root, ` +
        `or make this user the operator (tailscale set --operator=USER)`
    })
  }
  if (status === 400 || status === 404 || status === 405 || status === 412) {
    const old = status === 404 && /page not found/i.test(said)
      ? "; this tailscaled does not know the endpoint: is it too old?"
      : ""
    return new LocalApiBadRequest({
      ...fields,
      message: `tailscaled at ${ctx.socket} rejected ${ctx.endpoint} (${status}): ${said}${old}`
    })
  }
  const retry = status === 503 ? "; its backend or netmap is not ready yet, retry later" : ""
  return new LocalApiDaemonError({
    ...fields,
    message: `tailscaled at ${ctx.socket} failed ${ctx.endpoint} (${status}): ${said}${retry}`
  })
}

const unexpected = (ctx: Ctx, reason: string, body: string) =>
  new LocalApiUnexpectedAnswer({
    socket: ctx.socket,
    endpoint: ctx.endpoint,
    details: clip(scrub(body, ctx.secret)),
    message: `unexpected answer from ${ctx.endpoint} on ${ctx.socket}: ${scrub(reason, ctx.secret)}; ` +
      `is this tailscaled (and its version) supported?`
  })

const decodeJson = <S extends Schema.Top & { readonly DecodingServices: never }>(
  schema: S,
  ctx: Ctx,
  body: string
): Effect.Effect<S["Type"], LocalApiUnexpectedAnswer> =>
  Schema.decodeUnknownEffect(Schema.fromJsonString(schema))(body).pipe(
    Effect.mapError((e) => unexpected(ctx, describeIssue(e.issue), body))
  )

const CheckPrefsAnswer = Schema.Struct({ Error: Schema.optionalKey(Schema.NullOr(Schema.String)) })

/** Builds a client for one socket; no I/O until a call runs. */
export const makeLocalApi = (options: LocalApiOptions): LocalApiClient => {
  const { socket } = options
  const timeout = Duration.fromInputUnsafe(options.timeout ?? "10 seconds")
  const timeoutMillis = Duration.toMillis(timeout)

  const contextOf = (call: Call): Ctx => ({ socket, endpoint: `${call.method} ${pathOf(call)}`, secret: call.secret })

  /** The request, its body rendered now (a secret in it lives only in the request). */
  const requestOf = (call: Call): Http.HttpRequest => {
    const headers: Record<string, string> = { Host: HOST }
    if (options.capabilityVersion !== undefined) headers["Tailscale-Cap"] = String(options.capabilityVersion)
    const body = call.body?.()
    if (body !== undefined) headers["Content-Type"] = "application/json"
    return { method: call.method, target: { socketPath: socket, path: pathOf(call) }, headers, body }
  }

  const failed = (ctx: Ctx) => (failure: Http.HttpFailure): LocalApiError =>
    failure._tag === "HttpConnectionFailed"
      ? connectionError(ctx, failure)
      : new LocalApiTimeout({
        socket,
        endpoint: ctx.endpoint,
        timeoutMillis,
        message: `${ctx.endpoint} on ${socket} got no answer within ${Duration.format(timeout)}: ` +
          `tailscaled holds requests until its backend is ready, so it is still starting or hung; ` +
          `check its log, or allow a longer timeout`
      })

  /** One request/answer, bounded by the timeout; the request is destroyed if interrupted. */
  const exchange = (call: Call): Effect.Effect<Http.HttpAnswer, LocalApiError> =>
    Effect.suspend(() => Http.exchange(requestOf(call), timeout)).pipe(Effect.mapError(failed(contextOf(call))))

  /** A 2xx answer, or the error its status maps to. */
  const ok = (call: Call) =>
    Effect.flatMap(exchange(call), (answer) =>
      answer.status >= 200 && answer.status < 300
        ? Effect.succeed(answer)
        : Effect.fail(statusError(contextOf(call), answer)))

  const json = <S extends Schema.Top & { readonly DecodingServices: never }>(call: Call, schema: S) =>
    Effect.flatMap(ok(call), (answer) => decodeJson(schema, contextOf(call), answer.body))

  const empty = (call: Call) => Effect.asVoid(ok(call))

  const jsonBody = (value: unknown) => () => JSON.stringify(value)

  const whois: LocalApiClient["whois"] = (addr, opts) => {
    const call: Call = {
      method: "GET",
      name: "whois",
      query: opts?.proto === undefined ? { addr } : { addr, proto: opts.proto }
    }
    return Effect.flatMap(exchange(call), (answer): Effect.Effect<WhoIs | undefined, LocalApiError> => {
      if (answer.status === 404 && /no match/i.test(answer.body)) return Effect.succeed(undefined)
      if (answer.status !== 200) return Effect.fail(statusError(contextOf(call), answer))
      return decodeJson(WhoIs, contextOf(call), answer.body)
    })
  }

  const watchIpnBus: LocalApiClient["watchIpnBus"] = (mask) =>
    Effect.gen(function*() {
      const call: Call = { method: "GET", name: "watch-ipn-bus", query: { mask: String(mask) } }
      const ctx = contextOf(call)
      if (!Number.isSafeInteger(mask) || mask < 0) {
        return yield* new LocalApiBadRequest({
          socket,
          endpoint: ctx.endpoint,
          message: `invalid IPN bus mask ${mask}: give a sum of NotifyWatchOpt bits`
        })
      }
      // the request is destroyed when the scope closes
      const res = yield* Http.open(requestOf(call), timeout).pipe(Effect.mapError(failed(ctx)))
      if (res.status !== 200) {
        const body = yield* Effect.mapError(res.text, failed(ctx))
        return yield* statusError(ctx, { status: res.status, body })
      }
      return Stream.fromAsyncIterable(
        res.body,
        (e): LocalApiError =>
          new LocalApiDaemonError({
            socket,
            endpoint: ctx.endpoint,
            details: e instanceof Error ? e.message : String(e),
            message: `the IPN bus from tailscaled at ${socket} broke (${
              e instanceof Error ? e.message : String(e)
            }): did tailscaled exit or restart?`
          })
      ).pipe(
        Stream.decodeText,
        Stream.splitLines,
        Stream.filter((line) => line.trim() !== ""),
        Stream.mapEffect((line) => decodeJson(Notify, ctx, line))
      )
    })

  return {
    socket,
    status: (opts) => json({ method: "GET", name: "status", query: opts?.peers === false ? { peers: "false" } : undefined }, Status),
    prefs: () => json({ method: "GET", name: "prefs" }, Prefs),
    editPrefs: (masked) => json({ method: "PATCH", name: "prefs", body: jsonBody(masked) }, Prefs),
    checkPrefs: (prefs) => {
      const call: Call = { method: "POST", name: "check-prefs", body: jsonBody(prefs) }
      return Effect.flatMap(json(call, CheckPrefsAnswer), (answer) => {
        if (answer.Error === undefined || answer.Error === null || answer.Error === "") return Effect.void
        return Effect.fail(
          new LocalApiBadRequest({
            socket,
            endpoint: contextOf(call).endpoint,
            status: 200,
            details: answer.Error,
            message: `tailscaled at ${socket} found the prefs invalid: ${answer.Error}`
          })
        )
      })
    },
    start: (opts) =>
      empty({
        method: "POST",
        name: "start",
        secret: opts.authKey,
        body: () =>
          JSON.stringify({
            FrontendLogID: "",
            UpdatePrefs: opts.updatePrefs ?? null,
            AuthKey: opts.authKey === undefined ? "" : Redacted.value(opts.authKey)
          })
      }),
    loginInteractive: () => empty({ method: "POST", name: "login-interactive" }),
    logout: () => empty({ method: "POST", name: "logout" }),
    whois,
    watchIpnBus
  }
}

/** Makes LocalAPI clients; the live layer talks to real sockets, tests can provide another. */
export class LocalApi extends Context.Service<LocalApi, {
  readonly client: (options: LocalApiOptions) => LocalApiClient
}>()("@containerscale/core/LocalApi") {
  static readonly layer: Layer.Layer<LocalApi> = Layer.succeed(LocalApi, LocalApi.of({ client: makeLocalApi }))
}

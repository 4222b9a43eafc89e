import { type InvalidNetworkConfig, type Ipam, type MemberFailure, Netlink } from "@containerscale/core"
import { type Member } from "@containerscale/core/member"
import * as Log from "@containerscale/core/log"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Cause, Effect, Scope, Stream } from "effect"
import { HttpServer, HttpServerRequest, HttpServerResponse } from "effect/http"
import * as fs from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import * as path from "node:path"
import { makeIpamDriver } from "./ipam.ts"
import { makeNetworkDriver } from "./network.ts"
import type { DriverError } from "./protocol.ts"
import { openStore } from "./store.ts"

export const CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"

/** The largest request body the driver takes: dockerd's requests are a few KiB. A larger one is answered 413. */
export const MAX_BODY_BYTES = 1024 * 1024

/**
 * How much of a larger body is still read and dropped, so that a client that writes all its body
 * before it reads the answer gets the 413 (rather than a closed connection). A body larger still
 * is answered without reading it when its Content-Length says so, else (chunked) once this much
 * came, and the HTTP server closes the connection on the rest.
 */
export const DISCARD_BYTES = 4 * 1024 * 1024

/** The body as text, or undefined when it is larger than MAX_BODY_BYTES: never more than that is held. */
const readBody = Effect.fnUntraced(function*(request: HttpServerRequest.HttpServerRequest) {
  if (Number(request.headers["content-length"] ?? 0) > MAX_BODY_BYTES + DISCARD_BYTES) return undefined
  const chunks: Array<Uint8Array> = []
  let bytes = 0
  yield* Stream.runForEachWhile(request.stream, (chunk) =>
    Effect.sync(() => {
      bytes += chunk.length
      if (bytes <= MAX_BODY_BYTES) chunks.push(chunk)
      else chunks.length = 0
      return bytes <= MAX_BODY_BYTES + DISCARD_BYTES
    }))
  return bytes > MAX_BODY_BYTES ? undefined : Buffer.concat(chunks).toString("utf8")
})

/** Where a method's answer carries its error: `{"Error"}` for the IpamDriver, `{"Err"}` for the rest. */
export const errorKey = (method: string) => (method.startsWith("IpamDriver.") ? "Error" : "Err")

export interface DriverOptions {
  readonly socket: string
  readonly stateDir: string
  readonly env?: Readonly<Record<string, string | undefined>> | undefined
  /** 0600 by default; 0660 and this group with a GID */
  readonly group?: number | undefined
  /** the node namespace (tests); the driver's own when undefined */
  readonly nodeNetns?: string | undefined
}

type Reply = { readonly status: number; readonly body: unknown }

/**
 * One handler for both drivers: routes on the path only (dockerd sends no Content-Type, and an
 * empty body for calls without arguments), answers JSON always, `{"Err"}` for NetworkDriver and
 * `{"Error"}` for IpamDriver failures, and 404 for methods it does not know. Logs through the
 * context's logger, works through its `Netlink`, `Ipam` and `Member`.
 */
export const makeDispatcher = Effect.fnUntraced(function*(options: Omit<DriverOptions, "socket" | "group">) {
  const log = yield* Log.facade
  const store = openStore(options.stateDir, (file, e) => log.error("skipping an unreadable state file", { file, error: String(e) }))
  const netlink = yield* Netlink
  const env = options.env ?? process.env
  const nd = yield* makeNetworkDriver({ store, stateDir: options.stateDir, log, env, nodeNetns: options.nodeNetns })
  const ipam = yield* makeIpamDriver({
    store,
    routed: () =>
      netlink.routes(4, options.nodeNetns).pipe(
        Effect.map((rs) => rs.map((r) => r.dst).filter((d) => d !== "default")),
        Effect.orElseSucceed(() => [])
      )
  })
  const ok = (body: unknown) => Effect.succeed(body)
  const table: Record<string, (body: unknown) => Effect.Effect<unknown, DriverError | InvalidNetworkConfig | MemberFailure>> = {
    "Plugin.Activate": () => ok({ Implements: ["NetworkDriver", "IpamDriver"] }),
    "NetworkDriver.GetCapabilities": () => ok(nd.capabilities()),
    "NetworkDriver.CreateNetwork": nd.createNetwork,
    "NetworkDriver.DeleteNetwork": nd.deleteNetwork,
    "NetworkDriver.CreateEndpoint": nd.createEndpoint,
    "NetworkDriver.EndpointOperInfo": nd.endpointOperInfo,
    "NetworkDriver.DeleteEndpoint": nd.deleteEndpoint,
    "NetworkDriver.Join": nd.join,
    "NetworkDriver.Leave": nd.leave,
    "NetworkDriver.DiscoverNew": () => ok({}),
    "NetworkDriver.DiscoverDelete": () => ok({}),
    "NetworkDriver.ProgramExternalConnectivity": () => ok({}),
    "NetworkDriver.RevokeExternalConnectivity": () => ok({}),
    // swarm-manager calls: nothing to allocate for a local-scope driver; pass the options through
    "NetworkDriver.AllocateNetwork": (body) => ok({ Options: (body as { Options?: unknown } | undefined)?.Options ?? {} }),
    "NetworkDriver.FreeNetwork": () => ok({}),
    "IpamDriver.GetCapabilities": () => ok(ipam.capabilities()),
    "IpamDriver.GetDefaultAddressSpaces": () => ok(ipam.defaultAddressSpaces()),
    "IpamDriver.RequestPool": ipam.requestPool,
    "IpamDriver.ReleasePool": ipam.releasePool,
    "IpamDriver.RequestAddress": ipam.requestAddress,
    "IpamDriver.ReleaseAddress": ipam.releaseAddress
  }
  const quiet = new Set(["NetworkDriver.EndpointOperInfo", "NetworkDriver.GetCapabilities", "IpamDriver.GetCapabilities"])

  return (method: string, text: string): Effect.Effect<Reply> => {
    const handler = table[method]
    if (handler === undefined) return Effect.succeed({ status: 404, body: { Err: `${method} is not implemented by containerscale-docker` } })
    const errKey = errorKey(method)
    // dockerd sends an empty body for calls without arguments
    let body: unknown = {}
    if (text.trim() !== "") {
      try {
        body = JSON.parse(text)
      } catch {
        return Effect.succeed({ status: 400, body: { [errKey]: `${method}: the request body is not JSON` } })
      }
    }
    return Effect.suspend(() => handler(body)).pipe(
      Effect.map((body): Reply => ({ status: 200, body })),
      Effect.catchCause((cause) => {
        const failure = cause.reasons.find(Cause.isFailReason)
        const message = failure !== undefined
          ? failure.error.message
          : `internal error in ${method}: ${String(cause.reasons.map((r) => (r._tag === "Die" ? (r.defect as Error)?.message ?? r.defect : r._tag)).join("; "))}`
        log.warn(`${method} failed`, { error: message })
        return Effect.succeed<Reply>({ status: 200, body: { [errKey]: message } })
      }),
      Effect.tap((r) => quiet.has(method) || r.status !== 200 || errKey in (r.body as object) ? Effect.void : Effect.sync(() => log.info(method))),
      Effect.provideService(Netlink, netlink)
    )
  }
})

/** Fails when something answers on the socket (another driver); removes a stale socket file. */
const claimSocket = (socket: string) =>
  Effect.callback<void, Error>((resume) => {
    if (!fs.existsSync(socket)) return resume(Effect.void)
    const c = net.connect(socket)
    c.once("connect", () => {
      c.destroy()
      resume(Effect.fail(new Error(`${socket} is in use: another containerscale-docker (or plugin of that name) is running`)))
    })
    c.once("error", () => {
      fs.rmSync(socket, { force: true })
      resume(Effect.void)
    })
  })

/**
 * Serves both drivers on the unix socket with the Effect HTTP server (NodeHttpServer over a
 * node:http server listening on the path), while the scope is open; closing it stops listening
 * and removes the socket.
 */
export const serveDriver = (options: DriverOptions): Effect.Effect<void, Error, Scope.Scope | Netlink | Ipam | Member> =>
  Effect.gen(function*() {
    const dispatch = yield* makeDispatcher(options)
    fs.mkdirSync(path.dirname(options.socket), { recursive: true, mode: 0o755 })
    yield* claimSocket(options.socket)
    yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(options.socket, { force: true })))
    const server = yield* NodeHttpServer.make(() => http.createServer(), {
      path: options.socket,
      gracefulShutdownTimeout: "2 seconds"
    }).pipe(Effect.mapError((e) => new Error(`cannot listen on ${options.socket}: ${String((e.cause as Error)?.message ?? e)}`)))
    yield* Effect.sync(() => {
      if (options.group === undefined) fs.chmodSync(options.socket, 0o600)
      else {
        fs.chownSync(options.socket, 0, options.group)
        fs.chmodSync(options.socket, 0o660)
      }
    })
    const respond = (reply: Reply) => HttpServerResponse.text(JSON.stringify(reply.body ?? {}), { status: reply.status, contentType: CONTENT_TYPE })
    const app = Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const method = new URL(request.url, "http://plugin").pathname.replace(/^\/+/, "")
      const text = request.method === "POST" ? yield* Effect.orElseSucceed(readBody(request), () => "") : ""
      if (text === undefined) {
        return respond({ status: 413, body: { [errorKey(method)]: `${method}: the request body is larger than 1 MiB, more than any driver call needs` } })
      }
      return respond(yield* dispatch(method, text))
    })
    yield* HttpServer.serveEffect()(app).pipe(Effect.provideService(HttpServer.HttpServer, server))
  })

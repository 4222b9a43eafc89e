import * as fs from "node:fs"
import type * as http from "node:http"
import { Backend, BackendError } from "./backend.ts"
import { encodeCompact, encodeIndented } from "./gojson.ts"
import { formatNotify, has, NotifyWatchOpt, type NotifyFields, parseMask, wantsInitial } from "./bus.ts"
import { addressOfHostPort, sameAddress } from "./ip.ts"
import { PrefsDecodeError, prefsError, decodePrefs } from "./prefs.ts"
import { redactBody, RequestLog } from "./request-log.ts"
import { networkMap, STATE_NUMBER, tailcfgNode, userProfile } from "./shapes.ts"
import { CAPABILITY_VERSION, VERSION } from "./version.ts"
import type { Logger } from "./backend.ts"

export const LOCALAPI_HOST = "local-tailscaled.sock"
const PREFIX = "/localapi/v0/"

export interface LocalApiOptions {
  readonly backend: Backend
  readonly requests: RequestLog
  readonly log: Logger
  /** answer like a caller without write permission (403 on mutating endpoints) */
  readonly readOnly: boolean
  /** requests wait for this, like requests that arrive before the LocalBackend exists */
  readonly ready: Promise<void>
}

interface Call {
  readonly req: http.IncomingMessage
  readonly res: http.ServerResponse
  readonly method: string
  readonly query: URLSearchParams
  readonly body: string
}

type Handler = (call: Call, api: LocalApiOptions) => void | Promise<void>

const text = (res: http.ServerResponse, status: number, message: string) => {
  res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff" })
  res.end(`${message}\n`)
}

const json = (res: http.ServerResponse, status: number, value: unknown, indent = true) => {
  res.writeHead(status, { "Content-Type": "application/json" })
  res.end(indent ? encodeIndented(value) : encodeCompact(value))
}

const noContent = (res: http.ServerResponse) => {
  res.writeHead(204)
  res.end()
}

const sendError = (res: http.ServerResponse, e: unknown) => {
  if (e instanceof BackendError) {
    if (e.shape === "text") return text(res, e.status, e.message)
    return json(res, e.status, e.shape === "Error" ? { Error: e.message } : { error: e.message }, false)
  }
  if (e instanceof PrefsDecodeError) return text(res, 400, e.message)
  return text(res, 500, e instanceof Error ? e.message : String(e))
}

/** What Go's json.Decoder says about a body that is not JSON (near enough: the common cases). */
const goJsonError = (body: string, error: Error): string => {
  if (body.trim() === "") return "EOF"
  if (/end of JSON input|Unterminated|Expected .* after/i.test(error.message)) return "unexpected EOF"
  const token = /Unexpected token '?(.)'?/.exec(error.message)?.[1]
  return token === undefined ? "invalid character looking for beginning of value" : `invalid character '${token}' looking for beginning of value`
}

const parseJson = (body: string): unknown => {
  try {
    return JSON.parse(body)
  } catch (e) {
    throw new BackendError(400, goJsonError(body, e as Error))
  }
}

/** Go's defBool: strconv.ParseBool, falling back to the default. */
const boolParam = (value: string | null, fallback: boolean) =>
  value === null ? fallback : ["1", "t", "T", "true", "TRUE", "True"].includes(value) ? true : ["0", "f", "F", "false", "FALSE", "False"].includes(value) ? false : fallback

const wantPost = (call: Call) => {
  if (call.method !== "POST") throw new BackendError(400, "want POST")
}

const needWrite = (api: LocalApiOptions, message = "access denied") => {
  if (api.readOnly) throw new BackendError(403, message)
}

const withTimeout = (p: Promise<void>, ms: number) => Promise.race([p, new Promise<void>((r) => setTimeout(r, ms).unref())])

const serveStatus: Handler = async ({ res, query }, { backend }) => {
  await withTimeout(backend.refreshNetmap(), 2000)
  json(res, 200, backend.status(boolParam(query.get("peers"), true)))
}

const servePrefs: Handler = async (call, api) => {
  switch (call.method) {
    case "GET":
    case "HEAD":
      return json(call.res, 200, api.backend.currentPrefs())
    case "PATCH": {
      needWrite(api, "prefs write access denied")
      return json(call.res, 200, await api.backend.editPrefs(parseJson(call.body)))
    }
    default:
      throw new BackendError(405, "unsupported method")
  }
}

const serveCheckPrefs: Handler = (call, api) => {
  needWrite(api, "checkprefs access denied")
  if (call.method !== "POST") throw new BackendError(405, "unsupported method")
  let prefs
  try {
    prefs = decodePrefs(JSON.parse(call.body))
  } catch {
    throw new BackendError(400, "invalid JSON body")
  }
  const problem = prefsError(prefs)
  json(call.res, 200, problem === undefined ? {} : { Error: problem }, false)
}

const serveStart: Handler = (call, api) => {
  wantPost(call)
  needWrite(api)
  const options = parseJson(call.body)
  if (options === null || typeof options !== "object" || Array.isArray(options)) throw new BackendError(400, "json: cannot unmarshal into Go value of type ipn.Options")
  const { UpdatePrefs, AuthKey } = options as Record<string, unknown>
  if (AuthKey !== undefined && AuthKey !== null && typeof AuthKey !== "string") {
    throw new BackendError(400, "json: cannot unmarshal into Go struct field Options.AuthKey of type string")
  }
  api.backend.start({ updatePrefs: UpdatePrefs ?? null, authKey: AuthKey ?? "" })
  noContent(call.res)
}

const serveLoginInteractive: Handler = (call, api) => {
  wantPost(call)
  needWrite(api, "login access denied")
  api.backend.loginInteractive()
  noContent(call.res)
}

const serveLogout: Handler = async (call, api) => {
  wantPost(call)
  needWrite(api, "logout access denied")
  await api.backend.logout()
  noContent(call.res)
}

const serveWatchIpnBus: Handler = async ({ req, res, query }, { backend }) => {
  const mask = parseMask(query.get("mask"))
  if (typeof mask === "string") throw new BackendError(400, mask)
  if (has(mask, NotifyWatchOpt.InitialStatus) || has(mask, NotifyWatchOpt.InitialNetMap)) await withTimeout(backend.refreshNetmap(), 2000)
  res.writeHead(200, { "Content-Type": "application/json" })
  res.flushHeaders()
  const send = (n: NotifyFields) => void res.write(encodeCompact(formatNotify(n)))
  const { stop, watcher } = backend.bus.watch(mask, send)
  req.on("close", stop)
  res.on("close", stop)
  if (!wantsInitial(mask)) return
  const view = backend.statusInput()
  send({
    ...(has(mask, NotifyWatchOpt.InitialState) ? { SessionID: watcher.sessionId, State: STATE_NUMBER[backend.currentState()] } : {}),
    ...(has(mask, NotifyWatchOpt.InitialPrefs) ? { Prefs: backend.currentPrefs() } : {}),
    ...(has(mask, NotifyWatchOpt.InitialNetMap) && view.self !== undefined && view.tailnet !== undefined
      ? { NetMap: networkMap(view.self, view.peers ?? [], view.tailnet) }
      : {}),
    ...(has(mask, NotifyWatchOpt.InitialHealthState) ? { Health: backend.health() } : {}),
    ...(has(mask, NotifyWatchOpt.InitialStatus) ? { InitialStatus: backend.status(true) } : {})
  })
}

const serveWhois: Handler = async ({ res, query }, { backend }) => {
  const addr = query.get("addr")
  if (addr === null || addr === "") throw new BackendError(400, "missing 'addr' parameter")
  await withTimeout(backend.refreshNetmap(), 2000)
  let match
  if (addr.startsWith("nodekey:")) {
    match = backend.knownNodes().find((n) => n.nodeKey === addr)
  } else {
    const ip = addressOfHostPort(addr)
    if (ip === undefined) throw new BackendError(400, "invalid 'addr' parameter")
    match = backend.knownNodes().find((n) => n.addresses.some((a) => sameAddress(a, ip)))
  }
  if (match === undefined) throw new BackendError(404, "no match for IP:port")
  json(res, 200, { Node: tailcfgNode(match, match.online), UserProfile: userProfile(match), CapMap: null })
}

const pingResult = (ip: string, fields: Record<string, unknown>) => ({
  IP: ip,
  NodeIP: "",
  NodeName: "",
  Err: "",
  LatencySeconds: 0,
  Endpoint: "",
  PeerRelay: "",
  DERPRegionID: 0,
  DERPRegionCode: "",
  ...fields
})

/** Answers at once for an online peer (or this node); blocks like the real one while the peer is offline. */
const servePing: Handler = async (call, { backend }) => {
  wantPost(call)
  const ip = call.query.get("ip") ?? ""
  if (ip === "") throw new BackendError(400, "missing 'ip' parameter")
  if (addressOfHostPort(ip) !== ip) throw new BackendError(400, "invalid IP")
  if ((call.query.get("type") ?? "") === "") throw new BackendError(400, "missing 'type' parameter")
  if (backend.currentState() !== "Running") return json(call.res, 200, pingResult(ip, { Err: "no matching peer" }), false)
  await withTimeout(backend.refreshNetmap(), 2000)
  const [self, ...peers] = backend.knownNodes()
  if (self !== undefined && self.addresses.some((a) => sameAddress(a, ip))) {
    return json(call.res, 200, pingResult(ip, { NodeIP: ip, NodeName: self.givenName, IsLocalIP: true }), false)
  }
  const peer = peers.find((n) => n.addresses.some((a) => sameAddress(a, ip)))
  if (peer === undefined) return json(call.res, 200, pingResult(ip, { Err: "no matching peer" }), false)
  const answer = () => json(call.res, 200, pingResult(ip, { NodeIP: peer.addresses[0] ?? ip, NodeName: peer.givenName, LatencySeconds: 0.001 }), false)
  if (peer.online) return answer()
  await new Promise<void>((resolve) => {
    const timer = setInterval(async () => {
      await backend.refreshNetmap()
      if (backend.knownNodes().some((n) => n.nodeKey === peer.nodeKey && n.online)) {
        clearInterval(timer)
        answer()
        resolve()
      }
    }, 1000)
    call.req.on("close", () => {
      clearInterval(timer)
      resolve()
    })
  })
}

const serveMetrics: Handler = ({ res }, api) => {
  needWrite(api, "metric access denied")
  const c = api.backend.counters
  const lines = [
    ["tailscaled_inbound_packets_total", "counter", c.inboundPackets],
    ["tailscaled_inbound_bytes_total", "counter", c.inboundBytes],
    ["tailscaled_outbound_packets_total", "counter", c.outboundPackets],
    ["tailscaled_outbound_bytes_total", "counter", c.outboundBytes],
    ["tailscaled_inbound_dropped_packets_total", "counter", c.droppedPackets],
    ["tailscaled_health_messages", "gauge", (api.backend.status(false).Health ?? []).length]
  ].flatMap(([name, type, value]) => [`# TYPE ${name} ${type}`, `${name} ${value}`])
  res.writeHead(200, { "Content-Type": "text/plain; version=0.0.4; charset=utf-8" })
  res.end(`${lines.join("\n")}\n`)
}

const readSysctl = (file: string) => {
  try {
    return fs.readFileSync(file, "utf8").trim()
  } catch {
    return ""
  }
}

const serveCheckIpForwarding: Handler = ({ res }, { backend }) => {
  let warning = ""
  if (backend.tunMode) {
    if (readSysctl("/proc/sys/net/ipv4/ip_forward") !== "1") warning = "IP forwarding is disabled, subnet routing/exit nodes will not work. See https://tailscale.com/s/ip-forwarding"
    else if (readSysctl("/proc/sys/net/ipv6/conf/all/forwarding") !== "1") warning = "IPv6 forwarding is disabled, subnet routing/exit nodes will not work for IPv6. See https://tailscale.com/s/ip-forwarding"
  }
  json(res, 200, { Warning: warning }, false)
}

/** Not part of the real API: the request log, so tests can assert the call sequence. DELETE clears it. */
const serveDebugRequests: Handler = ({ res, method }, { requests }) => {
  if (method === "DELETE") {
    requests.clear()
    return noContent(res)
  }
  json(res, 200, requests.all())
}

const HANDLERS: Record<string, Handler> = {
  status: serveStatus,
  prefs: servePrefs,
  "check-prefs": serveCheckPrefs,
  start: serveStart,
  "login-interactive": serveLoginInteractive,
  logout: serveLogout,
  "watch-ipn-bus": serveWatchIpnBus,
  whois: serveWhois,
  ping: servePing,
  metrics: serveMetrics,
  usermetrics: serveMetrics,
  "check-ip-forwarding": serveCheckIpForwarding,
  "debug-requests": serveDebugRequests
}

const readBody = (req: http.IncomingMessage): Promise<string> =>
  new Promise((resolve, reject) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
    req.on("error", reject)
  })

const headerRecord = (req: http.IncomingMessage): Record<string, string> => {
  const out: Record<string, string> = {}
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) out[req.rawHeaders[i]!] = req.rawHeaders[i + 1]!
  return out
}

/** The request handler for the LocalAPI socket: ipnserver's routing plus localapi's checks. */
export const localApiHandler = (api: LocalApiOptions) => async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
  const url = new URL(req.url ?? "/", "http://local-tailscaled.sock")
  const method = req.method ?? "GET"
  try {
    await api.ready
    if (!url.pathname.startsWith("/localapi/")) {
      if (url.pathname !== "/") return text(res, 404, "404 page not found")
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" })
      return void res.end("<html><title>Tailscale</title><body><h1>Tailscale</h1>This is the local Tailscale daemon.\n")
    }

    const body = await readBody(req)
    const endpoint = url.pathname.startsWith(PREFIX) ? url.pathname.slice(PREFIX.length) : ""
    if (endpoint !== "debug-requests") {
      api.requests.record({
        time: new Date().toISOString(),
        method,
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        headers: headerRecord(req),
        body: redactBody(endpoint, body)
      })
    }
    api.log.debug(`localapi: ${method} ${url.pathname}${url.search}`)

    const host = req.headers.host ?? ""
    if (req.headers.referer !== undefined || req.headers.origin !== undefined || (host !== "" && host !== LOCALAPI_HOST)) {
      return text(res, 403, "invalid localapi request")
    }
    res.setHeader("Tailscale-Version", VERSION)
    res.setHeader("Tailscale-Cap", String(CAPABILITY_VERSION))
    res.setHeader("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'; script-src 'none'; script-src-elem 'none'; script-src-attr 'none'")
    res.setHeader("X-Frame-Options", "DENY")
    res.setHeader("X-Content-Type-Options", "nosniff")
    const handler = Object.hasOwn(HANDLERS, endpoint) ? HANDLERS[endpoint] : undefined
    if (handler === undefined) return text(res, 404, "404 page not found")
    await handler({ req, res, method, query: url.searchParams, body }, api)
  } catch (e) {
    if (!res.headersSent) sendError(res, e)
    else res.end()
  }
}

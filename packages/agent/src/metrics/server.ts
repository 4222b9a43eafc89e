import { Ip } from "@containerscale/core"
import { Effect, Result, type Scope } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import type { Registry } from "prom-client"

/**
 * The agent's HTTP endpoint: `GET /metrics` (Prometheus text format) and `GET /healthz` (200 and
 * the checks as JSON when all pass, 503 and the failing checks otherwise).
 */

export interface HealthCheck {
  readonly ok: boolean
  readonly detail?: string | undefined
}

export interface HealthReport {
  readonly ok: boolean
  readonly checks: Readonly<Record<string, HealthCheck>>
}

export interface MetricsServerOptions {
  /** "host:port" ("[::1]:9450" for IPv6); default "127.0.0.1:9450"; port 0 picks a free one */
  readonly address?: string
  readonly registry: Registry
  /** the agent's health; default: healthy with no checks */
  readonly health?: () => HealthReport | Promise<HealthReport>
  /** runs before each scrape, e.g. `() => reader.poll()` so /metrics includes every event written so far */
  readonly beforeScrape?: () => unknown
}

export interface MetricsServer {
  /** the address it listens on, e.g. "127.0.0.1:9450" */
  readonly address: string
  readonly port: number
  /** "http://127.0.0.1:9450" */
  readonly url: string
  readonly close: () => Promise<void>
}

export const DEFAULT_METRICS_ADDRESS = "127.0.0.1:9450"

const HOSTNAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i

/**
 * Splits "host:port" / "[v6]:port" / ":port" (all interfaces); the host is an IPv4 address, an
 * IPv6 one in brackets or a host name. Throws an `Error` that says what is wrong.
 */
export const parseListenAddress = (address: string): { readonly host: string; readonly port: number } => {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(address.trim())
  if (m === null) {
    throw new Error(`metrics address "${address}" is not host:port (e.g. 127.0.0.1:9450, [::1]:9450 or 0.0.0.0:9450)`)
  }
  const port = Number(m[3])
  if (port > 65535) throw new Error(`metrics address "${address}": port ${m[3]} is out of range (0 to 65535)`)
  const [v6, other = ""] = [m[1], m[2]]
  const ip = Ip.parseAddress(v6 ?? other)
  const bad = v6 !== undefined
    ? Result.isFailure(ip) || ip.success.family !== 6
    : /^[\d.]+$/.test(other) ? Result.isFailure(ip) : other !== "" && !HOSTNAME.test(other)
  if (bad) {
    throw new Error(`metrics address "${address}": "${v6 ?? other}" is not ${v6 !== undefined ? "an IPv6 address" : "an IPv4 address or a host name"}`)
  }
  return { host: v6 ?? (other === "" ? "0.0.0.0" : other), port }
}

const sendJson = (res: http.ServerResponse, status: number, body: unknown) => {
  const text = JSON.stringify(body) + "\n"
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" })
  res.end(text)
}

const messageOf = (e: unknown) => (e instanceof Error ? e.message : String(e))

export const startMetricsServer = (options: MetricsServerOptions): Promise<MetricsServer> => {
  const { host, port } = parseListenAddress(options.address ?? DEFAULT_METRICS_ADDRESS)
  const { registry } = options

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://localhost")
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end()
      return
    }
    if (url.pathname === "/metrics") {
      try {
        await options.beforeScrape?.()
      } catch {
        // the counters are as of the last good read
      }
      try {
        const text = await registry.metrics()
        res.writeHead(200, { "content-type": registry.contentType, "cache-control": "no-store" })
        res.end(req.method === "HEAD" ? undefined : text)
      } catch (e) {
        res.writeHead(500, { "content-type": "text/plain; charset=utf-8" }).end(`collecting metrics failed: ${messageOf(e)}\n`)
      }
      return
    }
    if (url.pathname === "/healthz") {
      let report: HealthReport
      try {
        report = options.health === undefined ? { ok: true, checks: {} } : await options.health()
      } catch (e) {
        report = { ok: false, checks: { health: { ok: false, detail: messageOf(e) } } }
      }
      const ok = report.ok && Object.values(report.checks).every((c) => c.ok)
      const checks = ok ? report.checks : Object.fromEntries(Object.entries(report.checks).filter(([, c]) => !c.ok))
      sendJson(res, ok ? 200 : 503, { ok, checks })
      return
    }
    res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end("not found: try /metrics or /healthz\n")
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((e) => {
      if (!res.headersSent) res.writeHead(500)
      res.end(String(messageOf(e)))
    })
  })
  server.keepAliveTimeout = 5_000
  server.requestTimeout = 30_000

  return new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(port, host, () => {
      server.off("error", reject)
      const info = server.address() as AddressInfo
      const shown = info.family === "IPv6" ? `[${info.address}]:${info.port}` : `${info.address}:${info.port}`
      resolve({
        address: shown,
        port: info.port,
        url: `http://${shown}`,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done())
            server.closeAllConnections()
          })
      })
    })
  })
}

/** The server as a scoped resource: listening while the scope is open. */
export const metricsServerScoped = (options: MetricsServerOptions): Effect.Effect<MetricsServer, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({ try: () => startMetricsServer(options), catch: (e) => (e instanceof Error ? e : new Error(String(e))) }),
    (server) => Effect.promise(() => server.close())
  )

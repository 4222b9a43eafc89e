import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import * as path from "node:path"
import { netnsPath } from "../netns.ts"
import { socketAnswers } from "../testnet/server-files.ts"

/** Helpers for tests that run the stand-in `tailscaled` binary and talk to its LocalAPI. */
export interface TailscaledOptions {
  /** the stand-in executable (the repository builds it as dist/testing-bin/tailscaled) */
  readonly binary: string
  readonly socket: string
  /** `--state`: a file path or `mem:` */
  readonly state: string
  /** `--tun` (default userspace-networking, so nothing touches the caller's network namespace) */
  readonly tun?: string
  /** run inside this named network namespace (`nsenter --net=/run/netns/NAME`) */
  readonly netns?: string
  readonly extraArgs?: ReadonlyArray<string>
  readonly env?: NodeJS.ProcessEnv
  /** how long to wait for the socket to answer (default 10 s) */
  readonly startTimeoutMs?: number
}

export interface RunningTailscaled {
  readonly pid: number
  readonly socket: string
  readonly process: ChildProcess
  /** everything the daemon wrote to stderr so far */
  readonly logs: () => string
  /** resolves with the exit code (or signal name) once the process is gone */
  readonly exited: Promise<number | string>
  /** SIGTERM (or `signal`), then waits for the exit; SIGKILL after `timeoutMs` */
  readonly stop: (signal?: NodeJS.Signals, timeoutMs?: number) => Promise<number | string>
}

export const startTailscaled = async (options: TailscaledOptions): Promise<RunningTailscaled> => {
  const args = [
    `--socket=${options.socket}`,
    `--state=${options.state}`,
    `--tun=${options.tun ?? "userspace-networking"}`,
    ...(options.extraArgs ?? [])
  ]
  const command = options.netns === undefined ? [options.binary, ...args] : ["nsenter", `--net=${netnsPath(options.netns)}`, options.binary, ...args]
  const child = spawn(command[0]!, command.slice(1), { stdio: ["ignore", "ignore", "pipe"], env: options.env ?? process.env })
  let stderr = ""
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString("utf8")))
  const exited = new Promise<number | string>((resolve) => child.on("exit", (code, signal) => resolve(code ?? signal ?? "unknown")))
  let exitedAlready: number | string | undefined
  void exited.then((c) => (exitedAlready = c))
  const stop = async (signal: NodeJS.Signals = "SIGTERM", timeoutMs = 10_000) => {
    if (exitedAlready !== undefined) return exitedAlready
    child.kill(signal)
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs)
    try {
      return await exited
    } finally {
      clearTimeout(timer)
    }
  }
  const deadline = Date.now() + (options.startTimeoutMs ?? 10_000)
  while (!(await socketAnswers(options.socket))) {
    if (exitedAlready !== undefined) throw new Error(`tailscaled exited (${exitedAlready}) before its socket answered:\n${stderr}`)
    if (Date.now() > deadline) {
      await stop("SIGKILL")
      throw new Error(`tailscaled did not answer on ${options.socket} in time:\n${stderr}`)
    }
    await new Promise((r) => setTimeout(r, 25))
  }
  return { pid: child.pid!, socket: options.socket, process: child, logs: () => stderr, exited, stop }
}

export interface LocalApiResponse {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
  readonly json: () => unknown
}

export interface LocalApiRequest {
  readonly method?: string
  readonly body?: unknown
  /** defaults to `Host: local-tailscaled.sock`; pass `{ host: "" }` to send an empty one */
  readonly headers?: Record<string, string>
  readonly timeoutMs?: number
}

/** One LocalAPI call over the unix socket; `path` may omit the `/localapi/v0/` prefix. */
export const localApi = (socket: string, route: string, request: LocalApiRequest = {}): Promise<LocalApiResponse> =>
  new Promise((resolve, reject) => {
    const fullPath = route.startsWith("/") ? route : `/localapi/v0/${route}`
    const payload = request.body === undefined ? undefined : typeof request.body === "string" ? request.body : JSON.stringify(request.body)
    const req = http.request({
      socketPath: socket,
      path: fullPath,
      method: request.method ?? "GET",
      setHost: false,
      headers: {
        host: "local-tailscaled.sock",
        ...(payload !== undefined ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } : {}),
        ...request.headers
      },
      timeout: request.timeoutMs ?? 15_000
    }, (res) => {
      const chunks: Array<Buffer> = []
      res.on("data", (c: Buffer) => chunks.push(c))
      res.on("end", () => {
        const body = Buffer.concat(chunks).toString("utf8")
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: () => JSON.parse(body) })
      })
      res.on("error", reject)
    })
    req.on("timeout", () => req.destroy(new Error(`${request.method ?? "GET"} ${fullPath}: no answer in time`)))
    req.on("error", reject)
    req.end(payload)
  })

export type Notify = Record<string, unknown>

/** An open watch-ipn-bus stream: every Notify so far, and a way to wait for one. */
export interface BusWatch {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  readonly messages: ReadonlyArray<Notify>
  /** waits for a message (already received or future) that `match` accepts */
  readonly waitFor: (match: (n: Notify) => boolean, timeoutMs?: number) => Promise<Notify>
  /** the raw body so far (error bodies, or the NDJSON text) */
  readonly raw: () => string
  readonly close: () => void
}

export const watchIpnBus = (socket: string, mask: number | string, headers: Record<string, string> = {}): Promise<BusWatch> =>
  new Promise((resolve, reject) => {
    const messages: Array<Notify> = []
    const waiters = new Set<() => void>()
    let raw = ""
    let pending = ""
    let ended = false
    const req = http.request({
      socketPath: socket,
      path: `/localapi/v0/watch-ipn-bus?mask=${mask}`,
      setHost: false,
      headers: { host: "local-tailscaled.sock", ...headers }
    }, (res) => {
      res.on("data", (c: Buffer) => {
        raw += c.toString("utf8")
        if (res.statusCode !== 200) return
        pending += c.toString("utf8")
        let nl
        while ((nl = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, nl)
          pending = pending.slice(nl + 1)
          if (line.trim() !== "") messages.push(JSON.parse(line) as Notify)
        }
        for (const w of waiters) w()
      })
      res.on("end", () => {
        ended = true
        for (const w of waiters) w()
      })
      res.on("error", () => undefined)
      resolve({
        status: res.statusCode ?? 0,
        headers: res.headers,
        messages,
        raw: () => raw,
        close: () => req.destroy(),
        waitFor: (match, timeoutMs = 15_000) =>
          new Promise((resolveWait, rejectWait) => {
            let seen = 0
            const check = () => {
              for (; seen < messages.length; seen++) {
                if (match(messages[seen]!)) {
                  cleanup()
                  return resolveWait(messages[seen]!)
                }
              }
              if (ended) {
                cleanup()
                rejectWait(new Error(`the bus stream ended; messages: ${JSON.stringify(messages)}`))
              }
            }
            const timer = setTimeout(() => {
              cleanup()
              rejectWait(new Error(`no matching bus message within ${timeoutMs} ms; messages: ${JSON.stringify(messages)}`))
            }, timeoutMs)
            const cleanup = () => {
              clearTimeout(timer)
              waiters.delete(check)
            }
            waiters.add(check)
            check()
          })
      })
    })
    req.on("error", (e) => (ended ? undefined : reject(e)))
    req.end()
  })

/** Removes a socket or state directory made for a test (never anything else). */
export const removeTestDir = (dir: string) => fs.rmSync(dir, { recursive: true, force: true })

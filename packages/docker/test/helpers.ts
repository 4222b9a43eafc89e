import { Ipam, layerIproute2 } from "@containerscale/core"
import { LocalApi, Member } from "@containerscale/core/member"
import * as Log from "@containerscale/core/log"
import { Effect, Exit, Layer, Scope } from "effect"
import * as fs from "node:fs"
import * as http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import { serveDriver } from "../src/server.ts"

/** What the driver's main provides (netlink through iproute2, the IPAM on disk, member mode); each driver logs into its own memory log. */
const services = Layer.mergeAll(Ipam.layer(), Member.layer).pipe(Layer.provideMerge(Layer.merge(layerIproute2, LocalApi.layer)))

export interface Running {
  readonly socket: string
  readonly stateDir: string
  /** the log lines as printed (JSON) */
  readonly lines: Array<string>
  readonly call: (method: string, body?: unknown) => Promise<{ status: number; body: any; raw: string }>
  readonly close: () => Promise<void>
}

/** Sends a request as dockerd does: POST, no Content-Type, JSON plus a newline, or an empty body. */
export const post = (socket: string, method: string, body?: unknown) =>
  new Promise<{ status: number; body: any; raw: string }>((resolve, reject) => {
    const req = http.request({ socketPath: socket, agent: false, method: "POST", path: `/${method}`, headers: { Accept: "application/vnd.docker.plugins.v1.2+json" } }, (res) => {
      const chunks: Array<Buffer> = []
      res.on("data", (c: Buffer) => chunks.push(c))
      res.on("end", () => {
        const raw = Buffer.concat(chunks).toString("utf8")
        let parsed: unknown
        try {
          parsed = JSON.parse(raw)
        } catch {
          parsed = undefined
        }
        resolve({ status: res.statusCode ?? 0, body: parsed, raw })
      })
    })
    req.on("error", reject)
    req.end(body === undefined ? "" : typeof body === "string" ? body : JSON.stringify(body) + "\n")
  })

export const tempDir = (name: string) => fs.mkdtempSync(path.join(os.tmpdir(), `cs-docker-${name}-`))

export const startDriver = async (options: {
  readonly dir: string
  readonly nodeNetns?: string | undefined
  readonly env?: Record<string, string | undefined>
}): Promise<Running> => {
  const socket = path.join(options.dir, "driver.sock")
  const stateDir = path.join(options.dir, "state")
  const log = Log.memory()
  const scope = Effect.runSync(Scope.make())
  await Effect.runPromise(
    Scope.provide(serveDriver({ socket, stateDir, nodeNetns: options.nodeNetns, env: options.env ?? {} }), scope).pipe(
      Effect.provide(Layer.merge(services, log.layer))
    )
  )
  return {
    socket,
    stateDir,
    lines: log.output,
    call: (method, body) => post(socket, method, body),
    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

export const hex64 = (seed: string) => seed.repeat(64).slice(0, 64)

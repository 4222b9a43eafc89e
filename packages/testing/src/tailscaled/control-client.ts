import { Schema } from "effect"
import * as http from "node:http"
import {
  controlSocketFromLoginServer,
  ErrorBody,
  NetmapResponse,
  RegisterResponse,
  TestnetNode
} from "../testnet/protocol.ts"

/**
 * Why a call to the control server failed. `refused`: it answered with an error (a bad auth key,
 * an expired node); `unreachable`: no answer at all; `gone` (404): the node no longer exists.
 */
export class ControlError extends Error {
  constructor(readonly reason: "refused" | "unreachable" | "gone", message: string) {
    super(message)
  }
}

export type RegisterResult = typeof RegisterResponse.Type
export type Netmap = typeof NetmapResponse.Type

export interface RegisterParams {
  readonly nodeKey: string
  readonly authKey?: string | undefined
  readonly hostname: string
  readonly advertiseTags: ReadonlyArray<string>
  readonly advertiseRoutes: ReadonlyArray<string>
}

const TIMEOUT_MS = 10_000

const post = (socketPath: string, route: string, body: unknown): Promise<{ status: number; body: string }> =>
  new Promise((resolve, reject) => {
    const payload = JSON.stringify(body)
    const req = http.request(
      {
        socketPath,
        path: route,
        method: "POST",
        headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(payload) },
        timeout: TIMEOUT_MS
      },
      (res) => {
        const chunks: Array<Buffer> = []
        res.on("data", (c: Buffer) => chunks.push(c))
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }))
        res.on("error", reject)
      }
    )
    req.on("timeout", () => req.destroy(new Error(`no answer within ${TIMEOUT_MS / 1000}s`)))
    req.on("error", reject)
    req.end(payload)
  })

const errorText = (body: string): string => {
  try {
    return Schema.decodeUnknownSync(ErrorBody)(JSON.parse(body)).error
  } catch {
    return body.trim()
  }
}

/** A client for the testnet control server's `/ts/*` endpoints, found from `ControlURL`. */
export class ControlClient {
  readonly socketPath: string

  constructor(readonly loginServer: string) {
    const socketPath = controlSocketFromLoginServer(loginServer)
    if (socketPath === undefined) {
      const shown = loginServer === "" ? "https://controlplane.tailscale.com (the default, as ControlURL is empty)" : loginServer
      throw new ControlError("unreachable", `control server unreachable: ${shown} is not a testnet login server (want unix:/path/to/control.sock)`)
    }
    this.socketPath = socketPath
  }

  private async call<S extends Schema.ConstraintDecoder<unknown>>(route: string, body: unknown, schema: S): Promise<S["Type"]> {
    let res: { status: number; body: string }
    try {
      res = await post(this.socketPath, route, body)
    } catch (e) {
      throw new ControlError("unreachable", `control server unreachable: ${this.loginServer}: ${e instanceof Error ? e.message : String(e)}`)
    }
    if (res.status === 404) throw new ControlError("gone", errorText(res.body) || "node not found")
    if (res.status !== 200) throw new ControlError("refused", errorText(res.body) || `control server answered ${res.status}`)
    try {
      return Schema.decodeUnknownSync(schema)(JSON.parse(res.body))
    } catch (e) {
      throw new ControlError("refused", `unexpected answer from the control server on ${route}: ${e instanceof Error ? e.message : String(e)}`)
    }
  }

  register(p: RegisterParams): Promise<RegisterResult> {
    return this.call("/ts/register", {
      nodeKey: p.nodeKey,
      ...(p.authKey !== undefined && p.authKey !== "" ? { authKey: p.authKey } : {}),
      hostname: p.hostname,
      advertiseTags: p.advertiseTags,
      advertiseRoutes: p.advertiseRoutes
    }, RegisterResponse)
  }

  netmap(nodeKey: string): Promise<Netmap> {
    return this.call("/ts/netmap", { nodeKey }, NetmapResponse)
  }

  async logout(nodeKey: string): Promise<void> {
    await this.call("/ts/logout", { nodeKey }, Schema.Unknown)
  }

  async update(nodeKey: string, change: { hostname?: string; advertiseRoutes?: ReadonlyArray<string> }): Promise<typeof TestnetNode.Type> {
    const res = await this.call("/ts/update", { nodeKey, ...change }, Schema.Struct({ node: TestnetNode }))
    return res.node
  }
}

import * as fs from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import type { AddressInfo } from "node:net"
import * as path from "node:path"
import { handleControl } from "./control-api.ts"
import { handleHeadscaleApi, handlePublic } from "./headscale-api.ts"
import { BodyTooLarge, json, readBody, type Reply, send } from "./http.ts"
import { controlSocketOf, loginServerFor, relaySocketOf, type TestnetNode } from "./protocol.ts"
import { Relay } from "./relay.ts"
import { socketAnswers } from "./server-files.ts"
import { DEFAULT_USER, type HeadscaleVersion, HEADSCALE_VERSIONS, TestnetState } from "./state.ts"
import { loadState, saveState, stateFileOf } from "./store.ts"

export type { HeadscaleVersion } from "./state.ts"

export interface TestnetOptions {
  readonly stateDir: string
  /** TCP port for the Headscale API on 127.0.0.1; 0 or absent picks a free one */
  readonly apiPort?: number | undefined
  /**
   * The Headscale API generation to imitate (default "0.29"): "0.25" serves no `/version`, has
   * the routes API (`/api/v1/routes`, rows enabled by id) instead of `approve_routes`, nodes
   * without route fields and with forcedTags/validTags/invalidTags, and names users in pre-auth
   * key calls. The tailnet underneath is the same.
   */
  readonly headscaleVersion?: HeadscaleVersion | undefined
}

export interface AuthKeyOptions {
  readonly reusable?: boolean
  readonly ephemeral?: boolean
  readonly tags?: ReadonlyArray<string>
  /** from now; 0 or less makes a key that is already expired (default 24 hours) */
  readonly expiresInMs?: number
  /** the owning user's name (default `containerscale`) */
  readonly user?: string
}

export interface Testnet {
  readonly stateDir: string
  readonly controlSocket: string
  readonly relaySocket: string
  /** the `ControlURL` for stand-in daemons: `unix:<controlSocket>` */
  readonly loginServer: string
  /** `http://127.0.0.1:<port>`, the Headscale API (also served on the control socket) */
  readonly apiUrl: string
  /** a Bearer key for `/api/v1` */
  readonly apiKey: string
  /** the Headscale API generation it imitates */
  readonly headscaleVersion: HeadscaleVersion
  /** a pre-auth key, `hskey-auth-<prefix>-<secret>` */
  createAuthKey(options?: AuthKeyOptions): Promise<string>
  nodes(): ReadonlyArray<TestnetNode>
  /** closes both sockets and the TCP listener and removes the socket files */
  close(): Promise<void>
}

const defaultKeyLifetimeMs = 24 * 3600_000

const listen = (server: net.Server, where: string | { port: number; host: string }): Promise<void> =>
  new Promise((resolve, reject) => {
    server.once("error", reject)
    const done = () => {
      server.off("error", reject)
      resolve()
    }
    if (typeof where === "string") server.listen(where, done)
    else server.listen(where.port, where.host, done)
  })

const closeServer = (server: net.Server): Promise<void> => new Promise((resolve) => server.close(() => resolve()))

/** Removes a socket file left by a server that died; refuses when a live server still listens on it. */
const claimSocketPath = async (socketPath: string): Promise<void> => {
  if (!fs.existsSync(socketPath)) return
  if (await socketAnswers(socketPath)) {
    throw new Error(`a testnet already listens on ${socketPath}; stop it (containerscale-testnet down --state ${path.dirname(socketPath)}) or use another state directory`)
  }
  fs.rmSync(socketPath, { force: true })
}

const httpHandler = (state: TestnetState, options: { control: boolean }) => async (request: http.IncomingMessage, response: http.ServerResponse) => {
  let reply: Reply
  try {
    const body = await readBody(request)
    const url = new URL(request.url ?? "/", "http://testnet")
    const method = request.method ?? "GET"
    reply = (options.control ? handleControl(state, method, url.pathname, body) : undefined) ??
      handlePublic(url.pathname, state.headscaleVersion) ??
      (url.pathname.startsWith("/api/")
        ? handleHeadscaleApi(state, { method, url, authorization: request.headers.authorization, body })
        : json(404, { code: 5, message: "Not Found", details: [] }))
  } catch (error) {
    reply = error instanceof BodyTooLarge
      ? json(413, { code: 3, message: error.message, details: [] })
      : json(500, { code: 13, message: `testnet server error: ${(error as Error).message}`, details: [] })
  }
  send(response, reply)
}

/**
 * Starts the testnet control server in this process: the `/ts/*` protocol and the Headscale API
 * on `control.sock`, the packet relay on `relay.sock`, the Headscale API on 127.0.0.1. The tailnet
 * is loaded from `<stateDir>/testnet.json` when there is one, with every node offline.
 */
export const startTestnet = async (options: TestnetOptions): Promise<Testnet> => {
  const headscaleVersion = options.headscaleVersion ?? "0.29"
  if (!HEADSCALE_VERSIONS.includes(headscaleVersion)) {
    throw new Error(`headscaleVersion must be one of ${HEADSCALE_VERSIONS.join(", ")}, not ${JSON.stringify(headscaleVersion)}`)
  }
  const stateDir = path.resolve(options.stateDir)
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 })
  const controlSocket = controlSocketOf(stateDir)
  const relaySocket = relaySocketOf(stateDir)
  await claimSocketPath(controlSocket)
  await claimSocketPath(relaySocket)

  const stateFile = stateFileOf(stateDir)
  let stopped = false
  const state = new TestnetState(loadState(stateFile), (snapshot) => {
    if (!stopped) saveState(stateFile, snapshot)
  }, { headscaleVersion })
  const apiKey = state.bootstrapApiKey()

  const relay = new Relay(state)
  state.onNodeRevoked = (nodeKey) => relay.disconnect(nodeKey)
  const control = http.createServer(httpHandler(state, { control: true }))
  const api = http.createServer(httpHandler(state, { control: false }))
  const started: Array<net.Server> = []
  const stop = async () => {
    await relay.close()
    const httpServers = [control, api].filter((server) => started.includes(server))
    for (const server of httpServers) server.closeAllConnections()
    await Promise.all(httpServers.map(closeServer))
    for (const socketPath of [controlSocket, relaySocket]) fs.rmSync(socketPath, { force: true })
    stopped = true
  }

  try {
    await listen(control, controlSocket)
    started.push(control)
    await listen(relay.server, relaySocket)
    started.push(relay.server)
    await listen(api, { port: options.apiPort ?? 0, host: "127.0.0.1" })
    started.push(api)
  } catch (error) {
    await stop()
    if ((error as NodeJS.ErrnoException).code === "EADDRINUSE" && options.apiPort !== undefined) {
      throw new Error(`port ${options.apiPort} on 127.0.0.1 is in use; pick another --api-port or leave it out for a free one`)
    }
    throw error
  }
  const apiUrl = `http://127.0.0.1:${(api.address() as AddressInfo).port}`

  let closing: Promise<void> | undefined
  return {
    stateDir,
    controlSocket,
    relaySocket,
    loginServer: loginServerFor(controlSocket),
    apiUrl,
    apiKey,
    headscaleVersion,
    createAuthKey: async (keyOptions = {}) => {
      const userName = keyOptions.user ?? DEFAULT_USER
      const user = state.userByName(userName)
      if (user === undefined) throw new Error(`no user ${JSON.stringify(userName)} on the testnet; create it first (POST /api/v1/user)`)
      return state.createPreAuthKey({
        userId: user.id,
        reusable: keyOptions.reusable ?? false,
        ephemeral: keyOptions.ephemeral ?? false,
        expiration: new Date(Date.now() + (keyOptions.expiresInMs ?? defaultKeyLifetimeMs)).toISOString(),
        aclTags: keyOptions.tags ?? []
      }).key
    },
    nodes: () => state.nodes().map((node) => state.toTestnetNode(node)),
    close: () => (closing ??= stop())
  }
}

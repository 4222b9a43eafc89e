import * as fs from "node:fs"
import * as http from "node:http"
import { Backend, type Logger } from "./backend.ts"
import { FlagError, parseFlags, usage } from "./flags.ts"
import { localApiHandler } from "./localapi.ts"
import { RequestLog } from "./request-log.ts"
import { listenUnix, socketIsLive } from "./socket.ts"
import { openStateStore } from "./state-store.ts"
import { VERSION } from "./version.ts"

/**
 * The stand-in `tailscaled`: real flags and LocalAPI on a unix socket, with the testnet control
 * server (testnet/protocol.ts) as its control plane and relay. Environment knobs for tests (not
 * real tailscaled's): CONTAINERSCALE_STANDIN_READONLY=1 answers like a caller without write
 * permission; CONTAINERSCALE_STANDIN_READY_DELAY_MS holds every request that long after start-up.
 */

const makeLogger = (verbose: number): Logger => {
  const write = (message: string) => process.stderr.write(`${new Date().toISOString()} ${message}\n`)
  return { info: write, debug: (m) => (verbose > 0 ? write(m) : undefined) }
}

const main = async (): Promise<void> => {
  let config
  try {
    config = parseFlags(process.argv.slice(2), process.env)
  } catch (e) {
    if (!(e instanceof FlagError)) throw e
    process.stderr.write(`${e.message}\n${e.exitCode === 2 ? `${usage()}\n` : ""}`)
    process.exit(e.exitCode)
  }
  if (config.printVersion) {
    process.stdout.write(`${VERSION}\n`)
    return process.exit(0)
  }
  const log = makeLogger(config.verbose)
  if (config.cleanup) {
    log.info("--cleanup: the stand-in leaves nothing behind outside its network namespace; nothing to do")
    return process.exit(0)
  }
  if (await socketIsLive(config.socket)) throw new Error(`safesocket.Listen: ${config.socket}: address already in use`)
  if (config.config !== "") log.info(`--config ${config.config} is accepted but not read by the stand-in`)
  if (config.stateDir !== "") fs.mkdirSync(config.stateDir, { recursive: true, mode: 0o700 })

  const backend = new Backend(config, openStateStore(config.state), log)
  const delayMs = Number(process.env.CONTAINERSCALE_STANDIN_READY_DELAY_MS ?? "0")
  const ready = delayMs > 0 ? new Promise<void>((r) => setTimeout(r, delayMs)) : Promise.resolve()
  const server = http.createServer({ requireHostHeader: false }, localApiHandler({
    backend,
    requests: new RequestLog(),
    log,
    readOnly: process.env.CONTAINERSCALE_STANDIN_READONLY === "1",
    ready
  }))
  server.keepAliveTimeout = 0
  server.requestTimeout = 0
  server.headersTimeout = 0

  // handlers first: a caller may signal as soon as the socket answers
  let stopping = false
  const stop = async (signal: string) => {
    if (stopping) return
    stopping = true
    log.info(`${signal}: shutting down`)
    await backend.shutdown().catch((e: unknown) => log.info(`shutdown: ${String(e)}`))
    server.close()
    fs.rmSync(config.socket, { force: true })
    process.exit(0)
  }
  process.on("SIGTERM", () => void stop("SIGTERM"))
  process.on("SIGINT", () => void stop("SIGINT"))

  await listenUnix(server, config.socket)
  log.info(
    `tailscaled stand-in ${VERSION}: LocalAPI on ${config.socket}, state ${config.state}, tun ${config.tun}; ` +
      `process started ${new Date(performance.timeOrigin).toISOString()}`
  )
  backend.run()
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`)
  process.exit(1)
})

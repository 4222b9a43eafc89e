import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import * as path from "node:path"
import { controlSocketOf } from "./protocol.ts"
import { startTestnet } from "./server.ts"
import { type HeadscaleVersion, HEADSCALE_VERSIONS } from "./state.ts"
import {
  isRunning,
  isTestnetServer,
  logFileOf,
  pidFileOf,
  type ReadyInfo,
  readPid,
  readReadyInfo,
  readyFileOf,
  removeServerFiles,
  socketAnswers,
  writeReadyInfo
} from "./server-files.ts"

export const usage = `containerscale-testnet: a local tailnet (control server, packet relay, Headscale API) for the stand-in tailscaled

Usage:
  containerscale-testnet up --state DIR [--api-port N] [--headscale-version V]
                                  start a server in the background (or find the running one)
                                  and print {"loginServer","authKey","apiUrl","apiKey","stateDir","pid"}
  containerscale-testnet down --state DIR
                                  stop the server of DIR (fine when none runs)
  containerscale-testnet serve --state DIR [--api-port N] [--headscale-version V]
                                  run the server in the foreground until SIGTERM or SIGINT
  containerscale-testnet --help

--headscale-version picks the Headscale API generation to imitate: 0.29 (default; approve_routes,
/version) or 0.25 (the routes API, no /version).

DIR holds the tailnet (testnet.json), the sockets control.sock and relay.sock, testnet.log and testnet.pid.
authKey is a fresh reusable, ephemeral pre-auth key of the user "containerscale", valid for 24 hours.
`

export class UsageError extends Error {}

interface Arguments {
  readonly command: "up" | "down" | "serve" | "help"
  readonly stateDir: string
  readonly apiPort: number | undefined
  /** undefined when not given: "up" then takes whatever runs, and a new server is 0.29 */
  readonly headscaleVersion: HeadscaleVersion | undefined
}

export const parseArguments = (argv: ReadonlyArray<string>): Arguments => {
  if (argv.length === 0) throw new UsageError("missing command: up, down or serve")
  if (argv.includes("--help") || argv.includes("-h") || argv[0] === "help") return { command: "help", stateDir: "", apiPort: undefined, headscaleVersion: undefined }
  const [command, ...rest] = argv
  if (command !== "up" && command !== "down" && command !== "serve") throw new UsageError(`unknown command ${JSON.stringify(command)}: use up, down or serve`)
  let stateDir: string | undefined
  let apiPort: number | undefined
  let headscaleVersion: HeadscaleVersion | undefined
  for (let i = 0; i < rest.length; i++) {
    const [flag, inline] = rest[i]!.startsWith("--") && rest[i]!.includes("=") ? rest[i]!.split(/=(.*)/s, 2) as [string, string] : [rest[i]!, undefined]
    const value = () => {
      const v = inline ?? rest[++i]
      if (v === undefined || v === "") throw new UsageError(`${flag} needs a value`)
      return v
    }
    if (flag === "--state") stateDir = value()
    else if (flag === "--api-port" && command !== "down") {
      const text = value()
      apiPort = Number(text)
      if (!/^\d+$/.test(text) || apiPort > 65535) throw new UsageError(`--api-port must be a TCP port (0-65535), not ${JSON.stringify(text)}`)
    } else if (flag === "--headscale-version" && command !== "down") {
      const text = value()
      const found = HEADSCALE_VERSIONS.find((version) => version === text)
      if (found === undefined) throw new UsageError(`--headscale-version must be ${HEADSCALE_VERSIONS.join(" or ")}, not ${JSON.stringify(text)}`)
      headscaleVersion = found
    } else throw new UsageError(`unknown flag ${JSON.stringify(flag)} for ${command}`)
  }
  if (stateDir === undefined) throw new UsageError(`${command} needs --state DIR`)
  return { command, stateDir: path.resolve(stateDir), apiPort, headscaleVersion }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** The generation a running server imitates: 0.25 has no `/version`. */
const versionOf = async (info: ReadyInfo): Promise<HeadscaleVersion> => {
  try {
    await callApi(info, "GET", "/version")
    return "0.29"
  } catch (error) {
    if (error instanceof ApiStatusError && error.status === 404) return "0.25"
    throw error
  }
}

class ApiStatusError extends Error {
  readonly status: number
  constructor(status: number, message: string) {
    super(message)
    this.status = status
  }
}

/** Calls the Headscale API on the control socket. */
const callApi = (info: ReadyInfo, method: string, apiPath: string, body?: unknown): Promise<unknown> =>
  new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body)
    const request = http.request(
      {
        socketPath: info.loginServer.slice("unix:".length),
        agent: false,
        method,
        path: apiPath,
        headers: { authorization: `Bearer ${info.apiKey}`, ...(payload === undefined ? {} : { "content-type": "application/json" }) }
      },
      (response) => {
        const chunks: Array<Buffer> = []
        response.on("data", (chunk: Buffer) => chunks.push(chunk))
        response.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8")
          if (response.statusCode !== 200) {
            reject(new ApiStatusError(response.statusCode ?? 0, `${method} ${apiPath} on the testnet failed (${response.statusCode}): ${text.trim()}`))
          }
          else resolve(JSON.parse(text))
        })
      }
    )
    request.on("error", reject)
    request.end(payload)
  })

const freshAuthKey = async (info: ReadyInfo, version: HeadscaleVersion): Promise<string> => {
  const { users } = (await callApi(info, "GET", "/api/v1/user?name=containerscale")) as { users: Array<{ id: string; name: string }> }
  if (users[0] === undefined) throw new Error(`the testnet in ${info.stateDir} has no user "containerscale" any more; create it (POST /api/v1/user)`)
  const expiration = new Date(Date.now() + 24 * 3600_000).toISOString()
  // 0.26+ name the user by id, 0.25 by name
  const user = version === "0.25" ? users[0].name : users[0].id
  const created = (await callApi(info, "POST", "/api/v1/preauthkey", { user, reusable: true, ephemeral: true, expiration, aclTags: [] })) as {
    preAuthKey: { key: string }
  }
  return created.preAuthKey.key
}

/** What `up` prints; refuses a running server of another generation than asked for. */
const upOutput = async (info: ReadyInfo, wanted: HeadscaleVersion | undefined) => {
  const version = await versionOf(info)
  if (wanted !== undefined && wanted !== version) {
    throw new Error(`the testnet in ${info.stateDir} already runs with --headscale-version ${version}; stop it first (containerscale-testnet down --state ${info.stateDir})`)
  }
  return upFields(info, await freshAuthKey(info, version))
}

const upFields = (info: ReadyInfo, authKey: string) => ({
  loginServer: info.loginServer,
  authKey,
  apiUrl: info.apiUrl,
  apiKey: info.apiKey,
  stateDir: info.stateDir,
  pid: info.pid
})

/** The running server of stateDir, if any: its ready file names a live `serve` process. */
const runningServer = (stateDir: string): ReadyInfo | undefined => {
  const info = readReadyInfo(stateDir)
  return info !== undefined && isTestnetServer(info.pid, stateDir) ? info : undefined
}

/** How this program runs itself: the compiled binary alone, or the runtime with this script. */
const selfCommand = (): Array<string> => {
  const script = process.argv[1]
  const compiled = script === undefined || script.startsWith("/$bunfs/") || script === process.execPath
  return compiled ? [process.execPath] : [process.execPath, ...process.execArgv, script]
}

const logTail = (stateDir: string): string => {
  try {
    const lines = fs.readFileSync(logFileOf(stateDir), "utf8").trimEnd().split("\n")
    return lines.slice(-5).join("\n")
  } catch {
    return ""
  }
}

const readyTimeoutMs = 20_000

const waitForReady = async (stateDir: string, pid: number, exited: () => boolean): Promise<ReadyInfo> => {
  const deadline = Date.now() + readyTimeoutMs
  for (;;) {
    const info = readReadyInfo(stateDir)
    if (info?.pid === pid) return info
    if (exited() || !isRunning(pid)) {
      throw new Error(`the testnet server exited before it was ready; see ${logFileOf(stateDir)}:\n${logTail(stateDir)}`)
    }
    if (Date.now() > deadline) {
      process.kill(pid, "SIGKILL")
      throw new Error(`the testnet server was not ready within ${readyTimeoutMs / 1000}s (stopped it); see ${logFileOf(stateDir)}`)
    }
    await sleep(25)
  }
}

export const up = async (stateDir: string, apiPort: number | undefined, headscaleVersion?: HeadscaleVersion): Promise<void> => {
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 })
  const running = runningServer(stateDir)
  if (running !== undefined) {
    process.stdout.write(`${JSON.stringify(await upOutput(running, headscaleVersion))}\n`)
    return
  }
  const recorded = readPid(stateDir)
  if (recorded !== undefined && isTestnetServer(recorded, stateDir)) {
    // started by another `up` a moment ago and not ready yet
    process.stdout.write(`${JSON.stringify(await upOutput(await waitForReady(stateDir, recorded, () => false), headscaleVersion))}\n`)
    return
  }
  if (await socketAnswers(controlSocketOf(stateDir))) {
    throw new Error(`something already listens on ${controlSocketOf(stateDir)} but left no ${readyFileOf(stateDir)}; stop it first`)
  }
  removeServerFiles(stateDir)
  const log = fs.openSync(logFileOf(stateDir), "a", 0o600)
  const [command, ...args] = selfCommand()
  const flags = [
    ...(apiPort === undefined ? [] : ["--api-port", String(apiPort)]),
    ...(headscaleVersion === undefined ? [] : ["--headscale-version", headscaleVersion])
  ]
  const child = spawn(command!, [...args, "serve", "--state", stateDir, ...flags], {
    detached: true,
    stdio: ["ignore", log, log]
  })
  fs.closeSync(log)
  let exited = false
  child.on("exit", () => (exited = true))
  const pid = await new Promise<number>((resolve, reject) => {
    child.once("spawn", () => resolve(child.pid!))
    child.once("error", (error) => reject(new Error(`could not start ${command}: ${error.message}`)))
  })
  fs.writeFileSync(pidFileOf(stateDir), `${pid}\n`)
  child.unref()
  const info = await waitForReady(stateDir, pid, () => exited)
  process.stdout.write(`${JSON.stringify(await upOutput(info, headscaleVersion))}\n`)
}

const stopTimeoutMs = 10_000

const waitForExit = async (pid: number, timeoutMs: number): Promise<boolean> => {
  const deadline = Date.now() + timeoutMs
  while (isRunning(pid)) {
    if (Date.now() > deadline) return false
    await sleep(25)
  }
  return true
}

export const down = async (stateDir: string): Promise<void> => {
  const pids = new Set([readPid(stateDir), readReadyInfo(stateDir)?.pid].filter((pid) => pid !== undefined))
  const servers = [...pids].filter((pid) => isTestnetServer(pid, stateDir))
  for (const pid of servers) {
    process.kill(pid, "SIGTERM")
    if (!(await waitForExit(pid, stopTimeoutMs))) {
      process.kill(pid, "SIGKILL")
      if (!(await waitForExit(pid, 2_000))) throw new Error(`the testnet server ${pid} did not exit, even after SIGKILL`)
    }
  }
  removeServerFiles(stateDir)
  process.stdout.write(`${JSON.stringify({ stopped: servers.length > 0, pids: servers })}\n`)
}

export const serve = async (stateDir: string, apiPort: number | undefined, headscaleVersion?: HeadscaleVersion): Promise<void> => {
  const testnet = await startTestnet({ stateDir, apiPort, headscaleVersion })
  writeReadyInfo({ pid: process.pid, stateDir: testnet.stateDir, loginServer: testnet.loginServer, apiUrl: testnet.apiUrl, apiKey: testnet.apiKey })
  console.log(`testnet serving ${testnet.loginServer} (relay ${testnet.relaySocket}), Headscale ${testnet.headscaleVersion} API on ${testnet.apiUrl}`)
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once("SIGTERM", resolve)
    process.once("SIGINT", resolve)
  })
  console.log(`testnet got ${signal}, stopping`)
  fs.rmSync(readyFileOf(stateDir), { force: true })
  if (readPid(stateDir) === process.pid) fs.rmSync(pidFileOf(stateDir), { force: true })
  await testnet.close()
}

/** Runs one command; the result is the exit code (2 for a usage error). */
export const runCli = async (argv: ReadonlyArray<string>): Promise<number> => {
  let parsed: Arguments
  try {
    parsed = parseArguments(argv)
  } catch (error) {
    if (!(error instanceof UsageError)) throw error
    process.stderr.write(`containerscale-testnet: ${error.message}\nRun containerscale-testnet --help for usage.\n`)
    return 2
  }
  try {
    if (parsed.command === "help") process.stdout.write(usage)
    else if (parsed.command === "up") await up(parsed.stateDir, parsed.apiPort, parsed.headscaleVersion)
    else if (parsed.command === "down") await down(parsed.stateDir)
    else await serve(parsed.stateDir, parsed.apiPort, parsed.headscaleVersion)
    return 0
  } catch (error) {
    process.stderr.write(`containerscale-testnet ${parsed.command}: ${(error as Error).message}\n`)
    return 1
  }
}

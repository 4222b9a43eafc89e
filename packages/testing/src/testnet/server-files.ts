import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { Schema } from "effect"
import { controlSocketOf, relaySocketOf } from "./protocol.ts"

/** Files a background testnet server leaves in its state directory, besides testnet.json. */
export const pidFileOf = (stateDir: string) => path.join(stateDir, "testnet.pid")
export const logFileOf = (stateDir: string) => path.join(stateDir, "testnet.log")
/** Written once the server listens, removed when it stops: what `up` prints, minus the auth key. */
export const readyFileOf = (stateDir: string) => path.join(stateDir, "testnet.ready.json")

export const ReadyInfo = Schema.Struct({
  pid: Schema.Number,
  stateDir: Schema.String,
  loginServer: Schema.String,
  apiUrl: Schema.String,
  apiKey: Schema.String
})
export type ReadyInfo = typeof ReadyInfo.Type

const decodeReadyInfo = Schema.decodeUnknownOption(Schema.fromJsonString(ReadyInfo))

export const readReadyInfo = (stateDir: string): ReadyInfo | undefined => {
  let text: string
  try {
    text = fs.readFileSync(readyFileOf(stateDir), "utf8")
  } catch {
    return undefined
  }
  const info = decodeReadyInfo(text)
  return info._tag === "Some" ? info.value : undefined
}

/** The ready file holds the API key: owner-only, written atomically so a reader never sees half of it. */
export const writeReadyInfo = (info: ReadyInfo): void => {
  const file = readyFileOf(info.stateDir)
  const temp = `${file}.${process.pid}.tmp`
  fs.writeFileSync(temp, `${JSON.stringify(info)}\n`, { mode: 0o600 })
  fs.renameSync(temp, file)
}

export const readPid = (stateDir: string): number | undefined => {
  try {
    const pid = Number(fs.readFileSync(pidFileOf(stateDir), "utf8").trim())
    return Number.isInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}

/** Alive and not a zombie (a zombie's parent may never reap it, e.g. under a minimal PID 1). */
export const isRunning = (pid: number): boolean => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z"
  } catch {
    return false
  }
}

/** Whether `pid` is `containerscale-testnet serve --state <stateDir>` (and not some process that got its pid later). */
export const isTestnetServer = (pid: number, stateDir: string): boolean => {
  let args: Array<string>
  try {
    args = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")
  } catch {
    return false
  }
  const flag = args.indexOf("--state")
  const given = flag >= 0 ? args[flag + 1] : args.find((arg) => arg.startsWith("--state="))?.slice("--state=".length)
  if (given === undefined || !args.includes("serve") || !isRunning(pid)) return false
  try {
    return path.resolve(fs.readlinkSync(`/proc/${pid}/cwd`), given) === stateDir
  } catch {
    return false
  }
}

/** Removes what a stopped server leaves behind; testnet.json and the log stay. */
export const removeServerFiles = (stateDir: string): void => {
  for (const file of [pidFileOf(stateDir), readyFileOf(stateDir), controlSocketOf(stateDir), relaySocketOf(stateDir)]) {
    fs.rmSync(file, { force: true })
  }
}

/** Whether something accepts connections on a unix socket. */
export const socketAnswers = (socketPath: string): Promise<boolean> =>
  new Promise((resolve) => {
    const probe = net.connect(socketPath)
    probe.once("connect", () => {
      probe.destroy()
      resolve(true)
    })
    probe.once("error", () => resolve(false))
  })

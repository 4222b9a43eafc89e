/**
 * Helpers for the tests that drive the real plugin binary (dist/bin/containerscale-ipam).
 * Not a test file itself.
 */
import { Ipam, type PoolConfig, resolvePool } from "@containerscale/core"
import { journalChecksum } from "@containerscale/core/internal"
import { Effect, Result } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..")
export const BIN = path.join(ROOT, "dist/bin/containerscale-ipam")

/** The binary is built by `npm run build` (scripts/test builds before testing). */
export const requireBinary = () => {
  if (!fs.existsSync(BIN)) {
    throw new Error(`${BIN} is missing: run "npm run build" at the repository root first`)
  }
}

export interface PluginRun {
  readonly exitCode: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

/** Plugin processes still running, so that a failed or timed-out test leaves none behind. */
const live = new Set<ChildProcess>()

/** Registers a spawned plugin process until it ends. */
export const track = <C extends ChildProcess>(child: C): C => {
  live.add(child)
  child.on("close", () => live.delete(child))
  return child
}

/** SIGKILLs the plugin processes this test file started that still run (after a failure or a timeout). */
export const killStragglers = () => {
  for (const child of live) child.kill("SIGKILL")
  live.clear()
}

/** Removes a temporary directory after killing any plugin process that could still write into it. */
export const cleanup = (dir: string | undefined) => {
  killStragglers()
  if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true })
}

/** CNI variables; an undefined value means "not set at all". */
export type CniEnv = { [K in "CNI_COMMAND" | "CNI_CONTAINERID" | "CNI_NETNS" | "CNI_IFNAME" | "CNI_ARGS" | "CNI_PATH"]?: string | undefined }

/** Runs the plugin once with exactly the given CNI variables (nothing inherited but PATH) and stdin. */
export const runPlugin = (env: CniEnv, stdin: string, cwd?: string): Promise<PluginRun> =>
  new Promise((resolve, reject) => {
    const set = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined)) as Record<string, string>
    const child = track(spawn(BIN, [], { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...set }, stdio: ["pipe", "pipe", "pipe"], cwd }))
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d))
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d))
    child.on("error", reject)
    child.stdin.on("error", () => {}) // the plugin may exit before reading stdin
    child.on("close", (exitCode, signal) => resolve({ exitCode, signal, stdout, stderr }))
    child.stdin.end(stdin)
  })

/** The env of an ADD/DEL/CHECK for one attachment. */
export const attachmentEnv = (command: string, containerId: string, ifname = "eth0", extra: CniEnv = {}): CniEnv => ({
  CNI_COMMAND: command,
  CNI_CONTAINERID: containerId,
  CNI_IFNAME: ifname,
  CNI_NETNS: `/var/run/netns/${containerId}`,
  CNI_PATH: "/opt/cni/bin",
  ...extra
})

export interface NetConf {
  readonly cniVersion?: string
  readonly name?: string
  readonly dataDir: string
  readonly ranges?: PoolConfig["ranges"]
  readonly ipam?: Record<string, unknown>
  readonly extra?: Record<string, unknown>
}

/** A network configuration as the runtime sends it: an IPAM plugin used directly. */
export const netConf = (c: NetConf): Record<string, unknown> => ({
  cniVersion: c.cniVersion ?? "1.1.0",
  name: c.name ?? "net1",
  type: "containerscale-ipam",
  ipam: {
    type: "containerscale-ipam",
    dataDir: c.dataDir,
    ranges: c.ranges ?? [[{ subnet: "10.77.0.0/24" }]],
    ...c.ipam
  },
  ...c.extra
})

export const parseJsonLine = (stdout: string): any => {
  const trimmed = stdout.trim()
  if (trimmed === "") throw new Error("stdout is empty")
  if (trimmed.includes("\n")) throw new Error(`stdout holds more than one line: ${stdout}`)
  return JSON.parse(trimmed)
}

/** Exit 0 with a result (or nothing) on stdout. Returns the parsed stdout (undefined when empty). */
export const expectSuccess = (run: PluginRun, what: string): any => {
  if (run.exitCode !== 0) {
    throw new Error(`${what}: expected exit 0, got ${run.exitCode} (${run.signal ?? ""}); stdout: ${run.stdout}; stderr: ${run.stderr}`)
  }
  if (run.stdout.trim() === "") return undefined
  const parsed = parseJsonLine(run.stdout)
  if (typeof parsed.code === "number") throw new Error(`${what}: exit 0 with an error object: ${run.stdout}`)
  return parsed
}

export interface CniErrorJson {
  readonly cniVersion?: string
  readonly code: number
  readonly msg: string
  readonly details?: string
}

/** Non-zero exit with exactly one error object on stdout. */
export const expectError = (run: PluginRun, what: string): CniErrorJson => {
  if (run.exitCode === 0 || run.exitCode === null) {
    throw new Error(`${what}: expected a non-zero exit, got ${run.exitCode} (${run.signal ?? ""}); stdout: ${run.stdout}`)
  }
  let parsed: any
  try {
    parsed = parseJsonLine(run.stdout)
  } catch (e) {
    throw new Error(`${what}: stdout is not one error object (${String(e)}): ${JSON.stringify(run.stdout)}; stderr: ${run.stderr}`)
  }
  if (typeof parsed.code !== "number" || typeof parsed.msg !== "string") {
    throw new Error(`${what}: the error object lacks a numeric code or a string msg: ${run.stdout}`)
  }
  const allowed = new Set(["cniVersion", "code", "msg", "details"])
  for (const k of Object.keys(parsed)) if (!allowed.has(k)) throw new Error(`${what}: unexpected key ${k} in ${run.stdout}`)
  return parsed as CniErrorJson
}

/** Every file under dir (recursively) with its bytes, for "nothing changed" checks. */
export const snapshot = (dir: string): Record<string, string> => {
  const out: Record<string, string> = {}
  if (!fs.existsSync(dir)) return out
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name)
      if (e.isDirectory()) {
        out[`${path.relative(dir, p)}/`] = "dir"
        walk(p)
      } else out[path.relative(dir, p)] = fs.readFileSync(p).toString("base64")
    }
  }
  walk(dir)
  return out
}

export interface Allocation {
  readonly containerId: string
  readonly ifname: string
  readonly ip: string
}

/** What the store holds, read through the core's Ipam (as any other process would). */
export const storeAllocations = (dataDir: string, network: string, pool: PoolConfig): Promise<Array<Allocation>> =>
  Effect.runPromise(
    Ipam.make({ dataDir }).usage({ network, pool: Result.getOrThrow(resolvePool(pool)) }).pipe(
      Effect.map((usage) => usage.flatMap((u) => u.allocations.map((a) => ({ ...a }))))
    )
  )

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Runs async tasks with at most `limit` in flight. */
export const pool = async <T>(tasks: ReadonlyArray<() => Promise<T>>, limit: number): Promise<Array<T>> => {
  const results: Array<T> = new Array(tasks.length)
  let next = 0
  const worker = async () => {
    while (next < tasks.length) {
      const i = next++
      results[i] = await tasks[i]!()
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker))
  return results
}


/**
 * Reads a journal independently of the store code and checks it line by line: the header, every
 * checksum, every record; and that no "+" hands out an address that is still held. Returns what
 * the journal says is held now ("containerId/ifname ip").
 */
export const checkJournal = (file: string): Array<string> => {
  const text = fs.readFileSync(file, "utf8")
  if (!text.startsWith("containerscale-ipam 1\n")) throw new Error(`${file}: bad header`)
  if (!text.endsWith("\n")) throw new Error(`${file}: the last line is torn`)
  const lines = text.split("\n").slice(1, -1)
  const held = new Map<string, string>()
  for (const [i, line] of lines.entries()) {
    const sp = line.lastIndexOf(" ")
    const body = line.slice(0, sp)
    if (sp === -1 || journalChecksum(body) !== line.slice(sp + 1)) throw new Error(`${file}:${i + 2}: bad checksum: ${line}`)
    const f = body.split(" ")
    if (f[0] === "+" && f.length === 5) {
      const owner = held.get(f[1]!)
      if (owner !== undefined) throw new Error(`${file}:${i + 2}: ${f[1]} handed to ${f[2]}/${f[3]} while ${owner} holds it`)
      held.set(f[1]!, `${f[2]}/${f[3]}`)
    } else if (f[0] === "-" && f.length === 2) {
      held.delete(f[1]!)
    } else if (f[0] !== "L" || f.length !== 3) {
      throw new Error(`${file}:${i + 2}: unknown record: ${line}`)
    }
  }
  return [...held].map(([ip, owner]) => `${owner} ${ip}`).sort()
}

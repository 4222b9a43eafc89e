/**
 * Shared helpers of the benchmarks: statistics, tables, temp dirs, child-process timing, and
 * writers that lay out a pool on disk directly (our journal format and host-local's files), so
 * that a /16 can be filled in milliseconds instead of minutes.
 */
import { journalChecksum } from "@containerscale/core/internal"
import { spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

export const repoRoot = path.resolve(import.meta.dirname, "../..")
export const ourBinary = process.env.CONTAINERSCALE_IPAM ?? path.join(repoRoot, "dist/bin/containerscale-ipam")
export const hostLocal = process.env.HOST_LOCAL ?? "/usr/lib/cni/host-local"

// ---------------------------------------------------------------------------------------------
// numbers

/** Linear-interpolated percentile (p in 0..100) of unsorted samples. */
export const percentile = (samples: ReadonlyArray<number>, p: number): number => {
  if (samples.length === 0) return Number.NaN
  const sorted = [...samples].sort((a, b) => a - b)
  const rank = (p / 100) * (sorted.length - 1)
  const lo = Math.floor(rank)
  const hi = Math.ceil(rank)
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (rank - lo)
}

export const median = (samples: ReadonlyArray<number>) => percentile(samples, 50)

/** Milliseconds with a precision that fits the magnitude. */
export const ms = (v: number): string => {
  if (!Number.isFinite(v)) return "-"
  if (v >= 1000) return v.toFixed(0)
  if (v >= 100) return v.toFixed(1)
  if (v >= 10) return v.toFixed(2)
  return v.toFixed(3)
}

export const ratio = (a: number, b: number): string => {
  if (!Number.isFinite(a) || !Number.isFinite(b) || b === 0) return "-"
  const r = a / b
  return r >= 100 ? `${r.toFixed(0)}x` : r >= 10 ? `${r.toFixed(1)}x` : r >= 0.1 ? `${r.toFixed(2)}x` : `${r.toPrecision(2)}x`
}

export const now = (): bigint => process.hrtime.bigint()
export const elapsedMs = (from: bigint, to: bigint = now()): number => Number(to - from) / 1e6

/** A markdown table, padded so it also reads well in a terminal. */
export const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const fmt = (cells: ReadonlyArray<string>) =>
    "| " + cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(" | ") + " |"
  const rule = "|" + widths.map((w, i) => (i === 0 ? "-".repeat(w + 2) : "-".repeat(w + 1) + ":")).join("|") + "|"
  return [fmt(header), rule, ...rows.map(fmt)].join("\n")
}

export const heading = (text: string) => console.log(`\n## ${text}\n`)
export const note = (text: string) => console.log(text)

/** The 1-minute load average: anything well above 0 means other work shares the cores and skews the numbers. */
export const loadavg = () => `load average ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`

export const machine = (): string => {
  const cpu = os.cpus()[0]?.model.trim() ?? "?"
  return `node ${process.version}, ${os.cpus().length} x ${cpu}, ${os.type()} ${os.release()}, ${
    Math.round(os.totalmem() / 2 ** 30)
  } GiB RAM, temp dirs in ${os.tmpdir()}, ${loadavg()}`
}

// ---------------------------------------------------------------------------------------------
// temp dirs

const created: Array<string> = []

export const tempDir = (prefix: string, base: string = os.tmpdir()): string => {
  const dir = fs.mkdtempSync(path.join(base, `cs-bench-${prefix}-`))
  created.push(dir)
  return dir
}

export const removeDir = (dir: string) => {
  fs.rmSync(dir, { recursive: true, force: true })
  const i = created.indexOf(dir)
  if (i !== -1) created.splice(i, 1)
}

/** Removes every temp dir still around (also on Ctrl-C). */
export const cleanupAll = () => {
  for (const dir of created.splice(0)) fs.rmSync(dir, { recursive: true, force: true })
}
process.on("exit", cleanupAll)
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    cleanupAll()
    process.exit(130)
  })
}

// ---------------------------------------------------------------------------------------------
// IPv4 arithmetic (the benchmarks only use IPv4 /16s)

export const ipToInt = (ip: string): number => ip.split(".").reduce((n, o) => n * 256 + Number(o), 0)
export const intToIp = (n: number): string => `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`

/** The addresses both allocators hand out in `a.b.0.0/16` with default rangeStart/rangeEnd/gateway: .0.2 .. .255.254. */
export const usableOf = (subnet16: string) => {
  const base = ipToInt(subnet16.split("/")[0]!)
  return { first: base + 2, last: base + 65534, count: 65533 }
}

/** A small deterministic PRNG (mulberry32), so random layouts are the same on every run. */
export const prng = (seed: number) => () => {
  seed |= 0
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

// ---------------------------------------------------------------------------------------------
// on-disk layouts

export interface Entry {
  readonly ip: string
  readonly containerId: string
  readonly ifname: string
}

const journalLine = (text: string) => `${text} ${journalChecksum(text)}\n`

/**
 * Writes `<dataDir>/<network>/allocations` in the format of packages/core/src/ipam/store.ts:
 * a header, one `+ ip id ifname setKey` line per entry (replaying a `+` line also moves the
 * range set's "last handed out" pointer to it), then an optional `L setKey ip` line that sets
 * the pointer explicitly. The library checks every checksum when it loads the file.
 */
export const writeOurStore = (
  dataDir: string,
  network: string,
  setKey: string,
  entries: ReadonlyArray<Entry>,
  last?: string
) => {
  const dir = path.join(dataDir, network)
  fs.mkdirSync(dir, { recursive: true })
  const parts: Array<string> = ["containerscale-ipam 1\n"]
  for (const e of entries) parts.push(journalLine(`+ ${e.ip} ${e.containerId} ${e.ifname} ${setKey}`))
  if (last !== undefined) parts.push(journalLine(`L ${setKey} ${last}`))
  fs.writeFileSync(path.join(dir, "allocations"), parts.join(""), { mode: 0o600 })
}

/**
 * Writes host-local's disk store (spec §11): one file per reserved address, named by the address,
 * holding `<containerID>\r\n<ifname>`, plus `last_reserved_ip.0`.
 */
export const writeHostLocalStore = (dataDir: string, network: string, entries: ReadonlyArray<Entry>, last: string) => {
  const dir = path.join(dataDir, network)
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 })
  for (const e of entries) fs.writeFileSync(path.join(dir, e.ip), `${e.containerId}\r\n${e.ifname}`, { mode: 0o600 })
  setHostLocalLast(dataDir, network, last)
}

export const setHostLocalLast = (dataDir: string, network: string, last: string) =>
  fs.writeFileSync(path.join(dataDir, network, "last_reserved_ip.0"), last, { mode: 0o600 })

// ---------------------------------------------------------------------------------------------
// CNI exec

export const cniConfig = (type: string, dataDir: string, network: string, subnet: string, strategy = "sequential") =>
  JSON.stringify({
    cniVersion: "1.0.0",
    name: network,
    type: "bench",
    ipam: { type, dataDir, ranges: [[{ subnet }]], ...(type === "host-local" ? {} : { strategy }) }
  })

export const cniEnv = (command: string, containerId: string, ifname = "eth0", extra: Record<string, string> = {}) => ({
  PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
  CNI_COMMAND: command,
  CNI_CONTAINERID: containerId,
  CNI_NETNS: "/var/run/netns/cs-bench",
  CNI_IFNAME: ifname,
  CNI_PATH: path.dirname(hostLocal),
  ...extra
})

export interface ExecResult {
  readonly ms: number
  readonly code: number | null
  readonly stdout: string
}

export class ExecFailed extends Error {}

/** Runs a program to completion and times it (spawn to exit, as a runtime sees it). */
export const execTimed = (
  file: string,
  args: ReadonlyArray<string>,
  env: Record<string, string>,
  stdin: string,
  check = true
): ExecResult => {
  const t0 = now()
  const r = spawnSync(file, args, { env, input: stdin, encoding: "utf8" })
  const t = elapsedMs(t0)
  // EPIPE: the program exited without reading its input (host-local's VERSION); its status still counts
  if (r.error !== undefined && (r.error as NodeJS.ErrnoException).code !== "EPIPE") throw r.error
  if (check && r.status !== 0) {
    throw new ExecFailed(`${path.basename(file)} ${env.CNI_COMMAND ?? ""} exited ${r.status}: ${r.stdout}${r.stderr}`)
  }
  return { ms: t, code: r.status, stdout: r.stdout }
}

export interface AsyncExec {
  readonly start: bigint
  readonly end: bigint
  readonly ms: number
  readonly code: number | null
  readonly stdout: string
}

/** The same, without blocking: for running many at once, or while this process watches. */
export const execAsync = (file: string, env: Record<string, string>, stdin: string, args: ReadonlyArray<string> = []): Promise<AsyncExec> =>
  new Promise((resolve, reject) => {
    const start = now()
    const child = spawn(file, args, { env, stdio: ["pipe", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d))
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d))
    child.on("error", reject)
    child.on("close", (code) => {
      const end = now()
      if (code !== 0) reject(new ExecFailed(`${path.basename(file)} ${env.CNI_COMMAND ?? ""} exited ${code}: ${stdout}${stderr}`))
      else resolve({ start, end, ms: elapsedMs(start, end), code, stdout })
    })
    child.stdin.on("error", () => {}) // EPIPE when the program exits without reading its input
    child.stdin.end(stdin)
  })

/** The address of the first `ips` entry of a CNI result, without the prefix. */
export const resultIp = (stdout: string): string => {
  const parsed = JSON.parse(stdout) as { ips?: Array<{ address?: string }> }
  return parsed.ips?.[0]?.address?.split("/")[0] ?? "?"
}

/**
 * A private copy of our binary, so that a rebuild of dist/bin during the run (other work in the same
 * checkout) neither changes what is measured nor fails an exec with ETXTBSY.
 */
export const snapshotOurBinary = (): { file: string; describe: string } => {
  const st = fs.statSync(ourBinary)
  const file = path.join(tempDir("bin"), path.basename(ourBinary))
  fs.copyFileSync(ourBinary, file)
  fs.chmodSync(file, 0o755)
  return { file, describe: `${ourBinary} (built ${st.mtime.toISOString()}, run from a copy)` }
}

export const requireFile = (file: string, hint: string) => {
  try {
    fs.accessSync(file, fs.constants.X_OK)
  } catch {
    console.error(`${file} is missing or not executable: ${hint}`)
    process.exit(1)
  }
}

/**
 * Runs `steps` once, each even when an earlier one fails, on the first call and on SIGINT,
 * SIGTERM or SIGHUP (which then exit 130): for benchmarks whose daemons need an async clean-up
 * before the process goes (this module's own handler would exit at once). Answers the clean-up.
 */
export const asyncCleanup = (steps: () => ReadonlyArray<() => unknown>): (() => Promise<void>) => {
  let cleaning: Promise<void> | undefined
  const cleanup = () =>
    cleaning ??= (async () => {
      for (const step of steps()) {
        try {
          await step()
        } catch (e) {
          console.error(`clean-up: ${(e as Error).message}`)
        }
      }
    })()
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.removeAllListeners(signal)
    process.on(signal, () => {
      console.error(`\n${signal}: cleaning up`)
      void cleanup().finally(() => process.exit(130))
    })
  }
  return cleanup
}

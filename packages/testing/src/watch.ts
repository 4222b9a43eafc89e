import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"

/** Calls `f` every `intervalMs` until it gives a value (not undefined, not a throw); fails after `ms` with the last error and `detail()`. */
export const waitUntil = async <A>(
  what: string,
  f: () => A | undefined | Promise<A | undefined>,
  ms: number,
  detail: () => string = () => "",
  intervalMs = 200
): Promise<A> => {
  const deadline = Date.now() + ms
  let last: unknown
  for (;;) {
    try {
      const v = await f()
      if (v !== undefined) return v
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${last === undefined ? "" : `: ${String(last)}`}\n${detail()}`.trimEnd())
    }
    await new Promise((r) => setTimeout(r, intervalMs))
  }
}

/** Clock ticks since boot, the unit of a process's start time in /proc/PID/stat. */
export const ticksNow = (): number => Math.floor(Number(fs.readFileSync("/proc/uptime", "utf8").split(" ")[0]) * 100)

const stat = (pid: string | number) => {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ")
    return { state: fields[0]!, started: Number(fields[19]) }
  } catch {
    return undefined
  }
}

/** Whether a process runs (a zombie waiting for its parent or init to reap it does not). */
export const processAlive = (pid: string | number): boolean => {
  const s = stat(pid)
  return s !== undefined && s.state !== "Z"
}

/**
 * The live processes in the network namespace `ns` (as /proc/PID/ns/net reads, `net:[inode]`)
 * that started before `ticks`: once a namespace is freed its inode number goes to the next one
 * made, perhaps another test's.
 */
export const processesInNetns = (ns: string, ticks: number): Array<string> =>
  fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p)).filter((pid) => {
    try {
      return fs.readlinkSync(`/proc/${pid}/ns/net`) === ns && processAlive(pid) && stat(pid)!.started <= ticks
    } catch {
      return false
    }
  })

export interface CommandLineWatch {
  readonly ready: Promise<void>
  /** stops watching; the command lines seen holding the secret, masked */
  readonly stop: () => Promise<Array<string>>
}

/**
 * Watches every command line on the machine for a secret, every 10 ms, from a process of its own
 * (a runtime client run synchronously by the test would stall a timer in the test's process). The
 * secret reaches the watcher through the file `secretPath`, never through its own command line.
 */
export const watchCommandLines = (secretPath: string): CommandLineWatch => {
  const script = `
    const fs = require("node:fs")
    const secret = fs.readFileSync(process.argv[1], "utf8").trim()
    const hits = new Set()
    const scan = () => {
      for (const pid of fs.readdirSync("/proc")) {
        if (!/^\\d+$/.test(pid)) continue
        try {
          const line = fs.readFileSync("/proc/" + pid + "/cmdline", "utf8")
          if (line.includes(secret)) hits.add(pid + ": " + line.split(secret).join("<secret>").split("\\0").join(" "))
        } catch {}
      }
    }
    const timer = setInterval(scan, 10)
    process.on("SIGTERM", () => {
      clearInterval(timer)
      scan()
      process.stdout.write(JSON.stringify([...hits]))
      process.exit(0)
    })
    process.stdout.write("ready\\n")
  `
  const child = spawn(process.execPath, ["-e", script, secretPath], { stdio: ["ignore", "pipe", "inherit"] })
  let out = ""
  child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d))
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.on("data", () => out.startsWith("ready\n") && resolve())
    child.once("exit", () => reject(new Error(`the command line watcher exited: ${out}`)))
  })
  return {
    ready,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM")
      await exited
      return JSON.parse(out.slice("ready\n".length) || "[]") as Array<string>
    }
  }
}

/** Every folder and file under `root`, depth first, as paths (none when `root` is missing): a test's "nothing changed on disk". */
export const filesUnder = (root: string): Array<string> =>
  fs.existsSync(root)
    ? fs.readdirSync(root, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? [path.join(root, e.name), ...filesUnder(path.join(root, e.name))] : [path.join(root, e.name)]
    )
    : []

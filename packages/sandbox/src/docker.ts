import { type ChildProcess, execFile, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { processesWith, runCommand } from "@containerscale/testing"
import { distBin } from "./repo.ts"
import { removeContainerdLeftovers } from "./leftovers.ts"
import { writeBusyboxRootfs } from "./podman.ts"

/** The Debian docker.io 20.10 client; /usr/local/bin/docker is a different (newer) client. */
export const dockerClient = "/usr/bin/docker"
export const dockerDaemon = "/usr/sbin/dockerd"

/** Where dockerd looks for v1 plugin sockets and spec files, whatever its --exec-root / --data-root. */
export const dockerPluginSocketDir = "/run/docker/plugins"
export const dockerPluginSpecDir = "/etc/docker/plugins"

export interface DockerResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

export interface DockerSandbox {
  readonly dir: string
  /** dockerd's API socket */
  readonly socket: string
  /** `<prefix>-busybox:latest`, imported from a busybox rootfs */
  readonly image: string
  /** the pid of the current dockerd */
  readonly pid: () => number
  /** runs the 20.10 client against the sandbox's daemon; returns stdout or throws with stderr */
  readonly docker: (args: ReadonlyArray<string>, options?: { readonly timeoutMs?: number }) => string
  /** the same without blocking; resolves with the exit code and both streams, never rejects on a non-zero exit */
  readonly dockerAsync: (args: ReadonlyArray<string>, options?: { readonly timeoutMs?: number }) => Promise<DockerResult>
  /**
   * stops dockerd (SIGTERM by pid; SIGKILL with `kill`, a crash) and starts it again with the
   * same config, roots and socket. Seen here with 20.10.24 and live-restore: after a SIGKILL the new
   * dockerd times out dialing its old containerd's socket and exits, so `kill` is for tests of
   * that failure, not a working crash-recovery path; dispose still ends the orphaned shims.
   */
  readonly restart: (options?: { readonly kill?: boolean }) => Promise<void>
  /** the daemon's log so far (for failure messages) */
  readonly log: () => string
  /**
   * removes every container and network the daemon has (it is private), the image, stops the
   * daemon by its pid and its containerd, then the cgroup and /run directories it made when they
   * are empty, and `dir` unless something is still mounted below it
   */
  readonly dispose: () => Promise<void>
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

const cmdline = (pid: number): string => {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ")
  } catch {
    return ""
  }
}

/** Waits for a child we spawned to exit; SIGKILL after `ms`. */
const waitForExit = (child: ChildProcess, ms: number): Promise<void> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    const timer = setTimeout(() => child.kill("SIGKILL"), ms)
    child.once("exit", () => {
      clearTimeout(timer)
      resolve()
    })
  })

/** Waits for a process that is not our child (found by pid) to go away; SIGKILL after `ms`. */
const waitForPidExit = async (pid: number, ms: number): Promise<void> => {
  const deadline = Date.now() + ms
  while (alive(pid)) {
    if (Date.now() > deadline) {
      try {
        process.kill(pid, "SIGKILL")
      } catch {
        // gone
      }
      const hard = Date.now() + 5_000
      while (alive(pid) && Date.now() < hard) await sleep(50)
      return
    }
    await sleep(50)
  }
}

const cgroupRoot = "/sys/fs/cgroup"

/** `/sys/fs/cgroup/<controller>/docker*` directories that exist now. */
const dockerCgroupDirs = (): Array<string> => {
  const out: Array<string> = []
  for (const controller of fs.readdirSync(cgroupRoot)) {
    const base = path.join(cgroupRoot, controller)
    let entries: Array<string> = []
    try {
      entries = fs.readdirSync(base)
    } catch {
      continue
    }
    for (const e of entries) if (e.startsWith("docker")) out.push(path.join(base, e))
  }
  return out
}

/** Removes a cgroup v1 directory and the empty ones below it, deepest first (rmdir fails on a busy one). */
const removeCgroupTree = (dir: string): void => {
  if (!fs.existsSync(dir)) return
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) removeCgroupTree(path.join(dir, entry.name))
  }
  fs.rmdirSync(dir)
}

const createMissing = (dir: string, created: Array<string>): void => {
  if (fs.existsSync(dir)) return
  createMissing(path.dirname(dir), created)
  fs.mkdirSync(dir)
  created.unshift(dir)
}

/** Directories outside the sandbox that dockerd may create, deepest first; removed again when they are new and empty. */
const hostDirs = [dockerPluginSocketDir, "/run/docker", dockerPluginSpecDir, "/etc/docker"]

const mountsBelow = (dir: string): Array<string> =>
  fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => l.split(" ")[4])
    .filter((m): m is string => m !== undefined && (m === dir || m.startsWith(`${dir}/`)))

const mountedBelow = (dir: string): boolean => mountsBelow(dir).length > 0

/**
 * A private dockerd 20.10 for one test file: its own config file, data root, exec root, pidfile
 * and socket in a temp dir, no iptables, no default bridge, the vfs storage driver, and a busybox
 * image. With `netns` the daemon runs inside that namespace (nsenter, so /sys and the cgroups stay
 * the host's): the namespaces it makes for containers are its own anyway, but the veths a network
 * driver creates in "the host" and the gateway addresses land in `netns` instead of the real host.
 * `liveRestore` keeps containers running across `restart()`.
 */
export const dockerSandbox = async (options: {
  readonly prefix: string
  readonly netns?: string | undefined
  readonly liveRestore?: boolean
  /** extra daemon.json keys */
  readonly daemonConfig?: Record<string, unknown>
  readonly readyTimeoutMs?: number
}): Promise<DockerSandbox> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${options.prefix}-docker-`))
  const socket = path.join(dir, "docker.sock")
  const dataRoot = path.join(dir, "data")
  const execRoot = path.join(dir, "exec")
  const pidfile = path.join(dir, "docker.pid")
  const config = path.join(dir, "daemon.json")
  const logFile = path.join(dir, "dockerd.log")
  const image = `${options.prefix}-busybox:latest`
  const readyMs = options.readyTimeoutMs ?? 60_000
  // containers' cgroups go under /sys/fs/cgroup/<controller>/<cgroupParent>/<id>, not the shared
  // docker/, so that dispose removes this daemon's and no other's
  const cgroupParent = `docker-${options.prefix}`
  fs.writeFileSync(config, JSON.stringify({
    // the trust key otherwise lands in /etc/docker/key.json
    "deprecated-key-path": path.join(dir, "key.json"),
    "cgroup-parent": `/${cgroupParent}`,
    ...(options.liveRestore ? { "live-restore": true } : {}),
    ...options.daemonConfig
  }))
  const cgroupsBefore = new Set(dockerCgroupDirs())
  const hostDirsBefore = new Set(hostDirs.filter((d) => fs.existsSync(d)))
  const env = { ...process.env, DOCKER_HOST: `unix://${socket}`, DOCKER_CONFIG: path.join(dir, "client") }
  delete (env as Record<string, string | undefined>).DOCKER_CONTEXT
  delete (env as Record<string, string | undefined>).DOCKER_TLS_VERIFY

  const daemonArgs = [
    "--config-file", config,
    "--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-forward=false", "--ip-masq=false",
    "--storage-driver=vfs",
    "--data-root", dataRoot,
    "--exec-root", execRoot,
    "--pidfile", pidfile,
    "-H", `unix://${socket}`
  ]
  let daemon: ChildProcess | undefined

  const start = () => {
    const log = fs.openSync(logFile, "a")
    // nsenter without --fork execs dockerd in place, so the child's pid is dockerd's
    daemon = options.netns === undefined
      ? spawn(dockerDaemon, daemonArgs, { stdio: ["ignore", log, log], env: process.env })
      : spawn("nsenter", [`--net=${options.netns}`, dockerDaemon, ...daemonArgs], { stdio: ["ignore", log, log], env: process.env })
    fs.closeSync(log)
  }
  const log = () => {
    try {
      return fs.readFileSync(logFile, "utf8")
    } catch {
      return ""
    }
  }

  const docker = (args: ReadonlyArray<string>, o: { readonly timeoutMs?: number } = {}) =>
    runCommand(dockerClient, args, { env, timeoutMs: o.timeoutMs ?? 120_000 })

  const dockerAsync = (args: ReadonlyArray<string>, o: { readonly timeoutMs?: number } = {}): Promise<DockerResult> =>
    new Promise((resolve) => {
      execFile(dockerClient, [...args], { env, timeout: o.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024, encoding: "utf8" }, (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof (error as { code?: unknown }).code === "number" ? (error as { code: number }).code : null
        resolve({ code, stdout, stderr: error !== null && stderr === "" ? error.message : stderr })
      })
    })

  /** Ready = the API answers `docker info` (not only that the socket exists). */
  const waitReady = async () => {
    const deadline = Date.now() + readyMs
    for (;;) {
      const d = daemon!
      if (d.exitCode !== null || d.signalCode !== null) {
        throw new Error(`dockerd exited (${d.exitCode ?? d.signalCode}) before it was ready:\n${log().slice(-4000)}`)
      }
      if (fs.existsSync(socket)) {
        const r = await dockerAsync(["info", "--format", "{{.ServerVersion}}"], { timeoutMs: 10_000 })
        if (r.code === 0 && r.stdout.trim() !== "") return
      }
      if (Date.now() > deadline) throw new Error(`dockerd did not answer on ${socket} within ${readyMs} ms:\n${log().slice(-4000)}`)
      await sleep(100)
    }
  }

  /** The containerd dockerd started (exec-root/containerd/containerd.pid), if it is alive and ours. */
  const managedContainerd = (): number | undefined => {
    const file = path.join(execRoot, "containerd", "containerd.pid")
    try {
      const pid = Number(fs.readFileSync(file, "utf8").trim())
      return pid > 0 && alive(pid) && cmdline(pid).includes(execRoot) ? pid : undefined
    } catch {
      return undefined
    }
  }

  const stop = async (signal: NodeJS.Signals = "SIGTERM") => {
    const d = daemon
    if (d === undefined) return
    if (d.exitCode === null && d.signalCode === null) d.kill(signal)
    // dockerd waits up to 15 s for containers by default; give it a little more before SIGKILL
    await waitForExit(d, 30_000)
  }

  const restart = async (o: { readonly kill?: boolean } = {}) => {
    await stop(o.kill ? "SIGKILL" : "SIGTERM")
    start()
    await waitReady()
  }

  const dispose = async () => {
    const errors: Array<unknown> = []
    const attempt = async (f: () => unknown) => {
      try {
        await f()
      } catch (e) {
        errors.push(e)
      }
    }
    const d = daemon
    if (d !== undefined && d.exitCode === null && d.signalCode === null) {
      await attempt(() => {
        const ids = docker(["ps", "-aq"]).split("\n").filter((s) => s !== "")
        if (ids.length > 0) docker(["rm", "-f", "-v", ...ids])
      })
      await attempt(() => {
        const nets = docker(["network", "ls", "--format", "{{.Name}}"]).split("\n")
          .filter((s) => s !== "" && !["bridge", "host", "none"].includes(s))
        for (const n of nets) docker(["network", "rm", n])
      })
      await attempt(() => {
        if (docker(["images", "-q", image]).trim() !== "") docker(["rmi", "-f", image])
      })
    }
    await attempt(() => stop())
    // the daemon stops its own containerd unless live-restore kept it; then it is ours to stop
    const containerd = managedContainerd()
    if (containerd !== undefined) {
      process.kill(containerd, "SIGTERM")
      await waitForPidExit(containerd, 15_000)
    }
    // after a crash (restart({ kill: true })) or a daemon that would not stop, the containers'
    // processes and their shims can outlive containerd: end those of this daemon, by pid
    await attempt(async () => {
      const leftovers = new Set<number>()
      for (const controller of fs.readdirSync(cgroupRoot)) {
        const parent = path.join(cgroupRoot, controller, cgroupParent)
        if (!fs.existsSync(parent)) continue
        for (const f of fs.readdirSync(parent, { recursive: true }).map(String).filter((f) => f.endsWith("cgroup.procs"))) {
          for (const pid of fs.readFileSync(path.join(parent, f), "utf8").split("\n").filter((x) => x !== "")) leftovers.add(Number(pid))
        }
      }
      for (const pid of fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p)).map(Number)) {
        if (cmdline(pid).includes(`-address ${execRoot}/`)) leftovers.add(pid)
      }
      for (const pid of leftovers) {
        try {
          process.kill(pid, "SIGKILL")
        } catch {
          // gone
        }
      }
      for (const pid of leftovers) await waitForPidExit(pid, 5_000)
    })
    // with live-restore dockerd leaves its self bind mount of the data root (and, if a container
    // survived, the container's mounts) in place on exit; with the daemon and its containerd gone
    // these are ours to undo, deepest first
    if (daemon === undefined || daemon.exitCode !== null || daemon.signalCode !== null) {
      for (const m of mountsBelow(dir).sort((a, b) => b.length - a.length)) await attempt(() => runCommand("umount", [m]))
    }
    // our own parent with whatever empty container cgroups are left in it; a shared docker* dir
    // only when it is new and empty (another daemon may be using it)
    for (const c of dockerCgroupDirs()) {
      if (path.basename(c) === cgroupParent) await attempt(() => removeCgroupTree(c))
      else if (!cgroupsBefore.has(c)) {
        try {
          fs.rmdirSync(c)
        } catch {
          // not empty: someone else's
        }
      }
    }
    for (const h of hostDirs) {
      if (!hostDirsBefore.has(h) && fs.existsSync(h)) {
        await attempt(() => {
          if (fs.readdirSync(h).length === 0) fs.rmdirSync(h)
        })
      }
    }
    await attempt(removeContainerdLeftovers)
    if (mountedBelow(dir)) errors.push(new Error(`mounts left under ${dir}; not deleting it`))
    else fs.rmSync(dir, { recursive: true, force: true })
    if (errors.length > 0) throw new AggregateError(errors, `docker sandbox cleanup failed: ${errors.map(String).join("; ")}`)
  }

  try {
    start()
    await waitReady()
    const rootfs = path.join(dir, "rootfs")
    writeBusyboxRootfs(rootfs)
    const tarball = path.join(dir, "rootfs.tar")
    runCommand("tar", ["-C", rootfs, "-cf", tarball, "."])
    docker(["import", tarball, image])
    fs.rmSync(tarball)
  } catch (e) {
    await dispose().catch(() => undefined)
    throw e
  }
  return { dir, socket, image, pid: () => daemon?.pid ?? 0, docker, dockerAsync, restart, log, dispose }
}

// ---------------------------------------------------------------------------------------------
// the driver

export interface DockerDriver {
  readonly name: string
  readonly socket: string
  /** the pid of the driver process now running (changes with restart) */
  readonly pid: () => number
  /** SIGTERM by pid, SIGKILL after 10 s */
  readonly stop: () => Promise<void>
  readonly restart: () => Promise<void>
  /** what the driver printed so far */
  readonly output: () => string
  /** stops it and removes the spec file, the socket, and plugin directories that did not exist before */
  readonly dispose: () => Promise<void>
}

/**
 * Runs `containerscale-docker --name <name> --socket <socketDir>/<name>.sock --state-dir <stateDir>`
 * (inside `netns` when one is given) and waits until it listens. With a socket outside
 * /run/docker/plugins the driver writes /etc/docker/plugins/<name>.spec itself.
 */
export const startDockerDriver = async (options: {
  readonly name: string
  readonly socketDir: string
  readonly stateDir: string
  readonly netns?: string | undefined
  readonly binary?: string
  readonly env?: Record<string, string>
  readonly args?: ReadonlyArray<string>
  readonly readyTimeoutMs?: number
}): Promise<DockerDriver> => {
  const binary = options.binary ?? path.join(distBin(), "containerscale-docker")
  const socket = path.join(options.socketDir, `${options.name}.sock`)
  const spec = path.join(dockerPluginSpecDir, `${options.name}.spec`)
  const specBefore = fs.existsSync(spec)
  const dirsBefore = new Set(hostDirs.filter((d) => fs.existsSync(d)))
  const madeDirs: Array<string> = []
  createMissing(options.socketDir, madeDirs)
  fs.mkdirSync(options.stateDir, { recursive: true })
  const readyMs = options.readyTimeoutMs ?? 20_000
  const args = ["--name", options.name, "--socket", socket, "--state-dir", options.stateDir, ...(options.args ?? [])]
  let child: ChildProcess | undefined
  let output = ""

  const start = async () => {
    const env = { ...process.env, ...options.env }
    child = options.netns === undefined
      ? spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"], env })
      : spawn("nsenter", [`--net=${options.netns}`, binary, ...args], { stdio: ["ignore", "pipe", "pipe"], env })
    const c = child
    c.stdout?.setEncoding("utf8").on("data", (d: string) => (output += d))
    c.stderr?.setEncoding("utf8").on("data", (d: string) => (output += d))
    const deadline = Date.now() + readyMs
    // the driver listens first and writes the spec file after (only for a socket outside /run/docker/plugins)
    const ready = () => fs.existsSync(socket) && (path.dirname(socket) === dockerPluginSocketDir || fs.existsSync(spec))
    while (!ready()) {
      if (c.exitCode !== null || c.signalCode !== null) {
        throw new Error(`containerscale-docker exited (${c.exitCode ?? c.signalCode}) before it listened on ${socket}:\n${output}`)
      }
      if (Date.now() > deadline) throw new Error(`containerscale-docker did not listen on ${socket} within ${readyMs} ms:\n${output}`)
      await sleep(25)
    }
  }
  const stop = async () => {
    const c = child
    if (c === undefined) return
    if (c.exitCode === null && c.signalCode === null) c.kill("SIGTERM")
    await waitForExit(c, 10_000)
  }
  const dispose = async () => {
    await stop()
    fs.rmSync(socket, { force: true })
    if (!specBefore) fs.rmSync(spec, { force: true })
    for (const d of madeDirs) {
      if (fs.existsSync(d) && fs.readdirSync(d).length === 0) fs.rmdirSync(d)
    }
    for (const h of hostDirs) {
      if (!dirsBefore.has(h) && fs.existsSync(h) && fs.readdirSync(h).length === 0) fs.rmdirSync(h)
    }
  }
  try {
    await start()
  } catch (e) {
    await dispose().catch(() => undefined)
    throw e
  }
  return {
    name: options.name,
    socket,
    pid: () => child?.pid ?? 0,
    stop,
    restart: async () => {
      await stop()
      await start()
    },
    output: () => output,
    dispose
  }
}

import { memberRoot } from "@containerscale/core"
import { memberPaths, NotifyWatchOpt } from "@containerscale/core/member"
import { type RealTailnet, startRealTailnet, tailnetRuntimeAvailable } from "@containerscale/sandbox"
import {
  netnsPath,
  netnsScope,
  processAlive,
  processesWith,
  removeLeftovers,
  uniquePrefix
} from "@containerscale/testing"
import { execFileSync, spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import * as path from "node:path"
import { type AsyncExec, asyncCleanup, cleanupAll, elapsedMs, execAsync, heading, loadavg, machine, median, ms, note, now, percentile, repoRoot, table, tempDir } from "./common.ts"

/**
 * Member mode against the real tailscaled (Headscale and DERP in a hub namespace: the test kit's
 * real tailnet) and, interleaved, against the stand-in tailscaled.
 *
 * Real: a fresh container namespace gets its connectivity from an untimed router-mode ADD inside
 * the node namespace; then the member plugin alone is timed, exec to exit, with the router result
 * as prevResult. Meanwhile this process polls for the member's tailscaled.pid (the daemon's
 * start), opens the IPN bus as soon as the socket answers and notes when `State: 6` (Running)
 * arrives: real tailscaled logs with one-second timestamps only. Our overhead is the ADD minus the
 * daemon's time from start to Running. The notifies' arrival times split the ADD into phases; a
 * few ADDs under strace (main thread only) show the plugin's own steps. Then pairs of fresh
 * containers give the time from the second one's ADD to the first ping reply over the tailnet.
 *
 * Stand-in: it logs its own process start and Running with millisecond timestamps.
 */

const N = Number(process.env.BENCH_MEMBER ?? 20)
const PINGS = Number(process.env.BENCH_MEMBER_PING ?? 5)
const TRACED = Number(process.env.BENCH_MEMBER_TRACE ?? 5)
const WARMUPS = 2
const SUBNET = "10.236.112.0/24"
const NETWORK = "bench"
const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
const NEEDS_LOGIN = 2
const STARTING = 5
const RUNNING = 6

const dir = tempDir("member")
fs.chmodSync(dir, 0o700)
// private copies: a rebuild of dist/ by other work during the run changes nothing here
const copy = (from: string, name: string) => {
  const to = path.join(dir, name)
  fs.copyFileSync(path.join(repoRoot, from), to)
  fs.chmodSync(to, 0o755)
  return to
}
const ours = copy("dist/bin/containerscale", "containerscale")
const standInTailscaled = copy("dist/testing-bin/tailscaled", "tailscaled-stand-in")
const testnetCli = path.join(repoRoot, "dist/testing-bin/containerscale-testnet")
const testnetState = path.join(dir, "testnet")
const realState = path.join(dir, "real")
const standInState = path.join(dir, "stand-in")
const scope = netnsScope(`${uniquePrefix("csm")}-`)
const tailnetPrefix = `${uniquePrefix("csmt")}-`

let tailnet: Promise<RealTailnet> | undefined
let testnetUp = false
/** Stops every daemon, removes every namespace and folder made; once, also on failure or a signal. */
const cleanup = asyncCleanup(() => [
  // member daemons a failed or interrupted run left: their command line names our private folder
  () => {
    for (const pid of processesWith(`--socket=${dir}/`)) {
      try {
        process.kill(pid, "SIGKILL")
      } catch {
        // already gone
      }
    }
  },
  async () => (await tailnet?.catch(() => undefined))?.close(),
  () => removeLeftovers(tailnetPrefix),
  () => testnetUp && execFileSync(testnetCli, ["down", "--state", testnetState], { stdio: "ignore" }),
  () => scope.dispose(),
  () => cleanupAll()
])
// e.g. EPIPE when the reader of stdout goes away
process.on("uncaughtException", (e) => {
  console.error(`member benchmark failed: ${e.stack ?? String(e)}`)
  void cleanup().finally(() => process.exit(1))
})

// ---------------------------------------------------------------------------------------------
// processes

/** Spawns and times one process, spawn to exit, without blocking the event loop; fails on a non-zero exit. */
const exec = (file: string, args: ReadonlyArray<string>, env: Record<string, string>, stdin = ""): Promise<AsyncExec> =>
  execAsync(file, env, stdin, args)

const cniEnv = (command: string, id: string, netns: string, extra: Record<string, string> = {}) => ({
  PATH,
  CNI_COMMAND: command,
  CNI_CONTAINERID: id,
  CNI_NETNS: netns,
  CNI_IFNAME: "eth0",
  CNI_ARGS: "",
  CNI_PATH: `${path.join(repoRoot, "dist/bin")}:/usr/lib/cni`,
  ...extra
})

// ---------------------------------------------------------------------------------------------
// a member's tailscaled, watched from outside

interface DaemonTimes {
  /** the member folder appeared: the plugin has decoded its config and begins the join */
  readonly folder: bigint | undefined
  /** tailscaled.log appeared: opened right before the spawn */
  readonly spawn: bigint | undefined
  /** tailscaled.pid appeared: written once the spawn has returned */
  readonly pid: bigint
  /** the IPN bus answered with its initial state: tailscaled's backend is ready */
  readonly answer: bigint
  /** the first notify carrying prefs: tailscaled has taken the plugin's `start` */
  readonly start: bigint | undefined
  /** LoginFinished: the control server took the key and registered the node */
  readonly loggedIn: bigint | undefined
  /** State 5: the first netmap came */
  readonly starting: bigint | undefined
  readonly running: bigint
}

interface Notify {
  readonly State?: number | null
  readonly Prefs?: unknown
  readonly LoginFinished?: unknown
}

/**
 * Opens the IPN bus of `socket` (initial state only), trying every millisecond until the socket
 * answers; `onNotify` sees each notify with its arrival time and returns true to stop.
 */
const openBus = (socket: string, onNotify: (n: Notify, at: bigint) => boolean, onEnd: () => void) => {
  let req: http.ClientRequest | undefined
  let answered = false
  let closed = false
  const attempt = () => {
    if (closed) return
    req = http.request({
      socketPath: socket,
      path: `/localapi/v0/watch-ipn-bus?mask=${NotifyWatchOpt.InitialState}`,
      setHost: false,
      agent: false,
      headers: { host: "local-tailscaled.sock" }
    }, (res) => {
      let pending = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => {
        const at = now()
        pending += chunk
        for (let nl = pending.indexOf("\n"); nl >= 0 && !closed; nl = pending.indexOf("\n")) {
          const line = pending.slice(0, nl).trim()
          pending = pending.slice(nl + 1)
          if (line === "") continue
          answered = true
          if (onNotify(JSON.parse(line) as Notify, at)) close()
        }
      })
      res.on("error", () => {})
      res.on("end", () => closed || onEnd())
    })
    req.on("error", () => {
      if (!answered && !closed) setTimeout(attempt, 1)
      else if (!closed) onEnd()
    })
    req.end()
  }
  const close = () => {
    closed = true
    req?.destroy()
  }
  attempt()
  return close
}

/**
 * Polls every millisecond for the member folder, its log and its pid file, then watches the
 * daemon's bus until Running.
 */
const watchJoin = (paths: { readonly dir: string; readonly log: string; readonly pid: string; readonly socket: string }, timeoutMs = 90_000) => {
  const socket = paths.socket
  let cancel = () => {}
  const done = new Promise<DaemonTimes>((resolve, reject) => {
    let folder: bigint | undefined
    let spawn: bigint | undefined
    let pid: bigint | undefined
    let answer: bigint | undefined
    let start: bigint | undefined
    let loggedIn: bigint | undefined
    let starting: bigint | undefined
    let closeBus = () => {}
    let finished = false
    const finish = (outcome: DaemonTimes | Error) => {
      if (finished) return
      finished = true
      clearInterval(poll)
      clearTimeout(deadline)
      closeBus()
      if (outcome instanceof Error) reject(outcome)
      else resolve(outcome)
    }
    cancel = () => finish(new Error("cancelled"))
    const deadline = setTimeout(() => finish(new Error(`${socket} did not reach Running within ${timeoutMs} ms`)), timeoutMs)
    const poll = setInterval(() => {
      const at = now()
      if (folder === undefined && fs.existsSync(paths.dir)) folder = at
      if (spawn === undefined && fs.existsSync(paths.log)) spawn = at
      if (!fs.existsSync(paths.pid)) return
      pid = at
      clearInterval(poll)
      closeBus = openBus(socket, (n, at) => {
        answer ??= at
        if (n.Prefs !== null && n.Prefs !== undefined) start ??= at
        if (n.LoginFinished !== null && n.LoginFinished !== undefined) loggedIn ??= at
        if (n.State === STARTING) starting ??= at
        if (n.State !== RUNNING) return false
        finish({ folder, spawn, pid: pid!, answer, start, loggedIn, starting, running: at })
        return true
      }, () => finish(new Error(`tailscaled closed its IPN bus before Running`)))
    }, 1)
  })
  return { done, cancel }
}

interface LeaveTimes {
  /** the first state after Running (Stopped): the logout has begun */
  readonly stopped: bigint | undefined
  /** NeedsLogin: the control server has taken the logout */
  readonly loggedOut: bigint | undefined
  /** the daemon's process is gone */
  readonly gone: bigint
}

/**
 * Watches a Running member's daemon through a DEL: resolves once its bus is open (so nothing is
 * missed), with `done` resolving when the process has gone (polled every millisecond).
 */
const watchLeave = (pidFile: string, socket: string, timeoutMs = 30_000) =>
  new Promise<{ readonly done: Promise<LeaveTimes> }>((ready, failed) => {
    const pid = Number(fs.readFileSync(pidFile, "utf8").trim())
    let stopped: bigint | undefined
    let loggedOut: bigint | undefined
    let isReady = false
    const closeBus = openBus(socket, (n, at) => {
      if (!isReady) {
        isReady = true
        ready({ done })
      } else if (typeof n.State === "number" && n.State !== RUNNING) {
        stopped ??= at
        if (n.State === NEEDS_LOGIN) loggedOut ??= at
      }
      return false
    }, () => {
      if (!isReady) failed(new Error(`the IPN bus of ${socket} closed before its first notify`))
    })
    const done = new Promise<LeaveTimes>((resolve, reject) => {
      const deadline = setTimeout(() => {
        clearInterval(poll)
        closeBus()
        reject(new Error(`tailscaled ${pid} still runs ${timeoutMs} ms after DEL started`))
      }, timeoutMs)
      const poll = setInterval(() => {
        if (processAlive(pid)) return
        const gone = now()
        clearInterval(poll)
        clearTimeout(deadline)
        closeBus()
        resolve({ stopped, loggedOut, gone })
      }, 1)
    })
    done.catch(() => {})
  })


// ---------------------------------------------------------------------------------------------
// the real tailnet

interface Real {
  readonly loginServer: string
  readonly authKey: string
  readonly tailscaled: string
  readonly node: string
  readonly versions: string
}

interface RealSample {
  readonly add: AsyncExec
  readonly daemon: DaemonTimes
  readonly del: AsyncExec
  readonly leave: LeaveTimes
}

const routerConfig = (prevResult?: unknown) => JSON.stringify({
  cniVersion: "1.0.0",
  name: NETWORK,
  type: "containerscale",
  mode: "router",
  ipam: { type: "containerscale-ipam", dataDir: path.join(dir, "ipam"), ranges: [[{ subnet: SUBNET }]] },
  ...(prevResult === undefined ? {} : { prevResult })
})

const memberConfig = (real: Real, prevResult: unknown) => JSON.stringify({
  cniVersion: "1.0.0",
  name: NETWORK,
  type: "containerscale",
  mode: "member",
  loginServer: real.loginServer,
  tailscaledPath: real.tailscaled,
  stateDir: realState,
  timeoutSeconds: 60,
  prevResult
})

interface Container {
  readonly id: string
  readonly ns: string
  readonly prev: unknown
}

/** A container namespace with an address and a route out through the node: router-mode ADD inside the node, untimed. */
const connected = async (real: Real, id: string): Promise<Container> => {
  const ns = netnsPath(scope.create(id))
  const routed = await exec("nsenter", [`--net=${netnsPath(real.node)}`, ours], cniEnv("ADD", id, ns), routerConfig())
  return { id, ns, prev: JSON.parse(routed.stdout) }
}

const disconnect = async (real: Real, c: Container) => {
  await exec("nsenter", [`--net=${netnsPath(real.node)}`, ours], cniEnv("DEL", c.id, c.ns), routerConfig(c.prev))
  execFileSync("ip", ["netns", "del", path.basename(c.ns)])
}

const pathsOf = (id: string) => memberPaths(memberRoot(realState), `${NETWORK}_${id}`)

/** The member plugin's ADD, timed, with the daemon watched; `tracer` runs the plugin under it. */
const memberAdd = async (real: Real, c: Container, tracer: ReadonlyArray<string> = []) => {
  const paths = pathsOf(c.id)
  const watch = watchJoin(paths)
  try {
    const [file, ...args] = [...tracer, ours]
    const add = await exec(file!, args, cniEnv("ADD", c.id, c.ns, { CONTAINERSCALE_AUTH_KEY: real.authKey }), memberConfig(real, c.prev))
    return { add, daemon: await watch.done }
  } catch (e) {
    watch.cancel()
    watch.done.catch(() => {})
    throw e
  }
}

const memberDel = (real: Real, c: Container) => exec(ours, [], cniEnv("DEL", c.id, c.ns), memberConfig(real, c.prev))

const realOnce = async (real: Real, id: string): Promise<RealSample> => {
  const c = await connected(real, id)
  const { add, daemon } = await memberAdd(real, c)
  const paths = pathsOf(id)
  const watch = await watchLeave(paths.pid, paths.socket)
  const del = await memberDel(real, c)
  const leave = await watch.done
  await disconnect(real, c)
  return { add, daemon, del, leave }
}

const tailnetAddress = (stdout: string) =>
  (JSON.parse(stdout) as { ips: Array<{ address: string }> }).ips.map((ip) => ip.address.split("/")[0]!).find((a) => a.startsWith("100."))!

/**
 * Two fresh containers join; from the moment the second one's ADD returns, the first pings it
 * over the tailnet (one echo request, up to 15 s for its reply) until the reply line appears.
 */
const pingOnce = async (real: Real, k: number): Promise<{ ms: number; rtt: number } | undefined> => {
  const first = await connected(real, `pa${k}`)
  await memberAdd(real, first)
  const second = await connected(real, `pb${k}`)
  const joined = await memberAdd(real, second)
  const target = tailnetAddress(joined.add.stdout)
  const reply = await new Promise<{ at: bigint; rtt: number } | undefined>((resolve, reject) => {
    const child = spawn("nsenter", [`--net=${first.ns}`, "busybox", "ping", "-c", "1", "-W", "15", target], { env: { PATH } })
    let out = ""
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      const at = now()
      out += d
      const m = /bytes from .* time=([\d.]+) ms/.exec(out)
      if (m !== null) resolve({ at, rtt: Number(m[1]) })
    })
    child.on("error", reject)
    child.on("close", () => resolve(undefined))
  })
  for (const c of [second, first]) {
    await memberDel(real, c)
    await disconnect(real, c)
  }
  return reply === undefined ? undefined : { ms: elapsedMs(joined.add.end, reply.at), rtt: reply.rtt }
}

/**
 * One ADD under strace, main thread only (ptrace stops every syscall of that thread, so all of it
 * runs slower; following the threads and the daemon too costs far more): the spawn of tailscaled,
 * every connect to its socket (one per LocalAPI call), exit.
 */
const tracedOnce = async (real: Real, k: number) => {
  const c = await connected(real, `t${k}`)
  const out = path.join(dir, `strace-${k}.txt`)
  const { add } = await memberAdd(real, c, ["strace", "-ttt", "-e", "trace=execve,vfork,clone,clone3,connect,exit_group", "-o", out])
  await memberDel(real, c)
  await disconnect(real, c)
  const socket = pathsOf(c.id).socket
  const lines = fs.readFileSync(out, "utf8").split("\n")
  fs.rmSync(out)
  const at = (l: string) => Number(l.split(" ")[0]) * 1000
  const exec0 = at(lines.find((l) => l.includes(" execve("))!)
  const spawned = at(lines.find((l) => / vfork\(\)|CLONE_VFORK/.test(l))!)
  const connects = lines.filter((l) => l.includes(" connect(") && l.includes(`"${socket}"`))
  const answered = connects.filter((l) => / = 0$/.test(l)).map(at)
  const exited = at(lines.find((l) => l.includes(" exit_group("))!)
  return { total: add.ms, exec0, spawned, answered, failed: connects.length - answered.length, exited }
}

// ---------------------------------------------------------------------------------------------
// the stand-in

interface StandInSample {
  readonly add: number
  readonly running: number
  readonly del: number
}

const standInOnce = async (up: { loginServer: string; authKey: string }, id: string): Promise<StandInSample> => {
  const ns = netnsPath(scope.create(id))
  const config = JSON.stringify({
    cniVersion: "1.0.0", name: NETWORK, type: "containerscale", mode: "member", loginServer: up.loginServer,
    tailscaledPath: standInTailscaled, stateDir: standInState, timeoutSeconds: 20,
    prevResult: { cniVersion: "1.0.0", interfaces: [{ name: "eth0", sandbox: ns }], ips: [] }
  })
  const env = (command: string) => cniEnv(command, id, ns, { CONTAINERSCALE_AUTH_KEY: up.authKey })
  const add = await exec(ours, [], env("ADD"), config)
  const log = fs.readFileSync(memberPaths(memberRoot(standInState), `${NETWORK}_${id}`).log, "utf8")
  const started = Date.parse(/process started (\S+)/.exec(log)?.[1] ?? "")
  const running = Date.parse(log.split("\n").find((l) => l.includes("-> Running"))?.split(" ")[0] ?? "") - started
  const del = await exec(ours, [], env("DEL"), config)
  execFileSync("ip", ["netns", "del", path.basename(ns)])
  return { add: add.ms, running, del: del.ms }
}

// ---------------------------------------------------------------------------------------------

const p50p95 = (v: ReadonlyArray<number>) => [ms(median(v)), ms(percentile(v, 95))]
const began = now()

const startReal = async (): Promise<Real> => {
  tailnet = startRealTailnet({ prefix: tailnetPrefix, progress: (line) => console.error(line) })
  const t = await tailnet
  const user = await t.createUser("bench")
  const key = await t.createAuthKey({ user, reusable: true, ephemeral: true })
  const node = t.addHost("node", { routedSubnets: [SUBNET] })
  return {
    loginServer: t.loginServer,
    authKey: key.key,
    tailscaled: t.runtime.tailscaled,
    node: node.netns,
    versions: `tailscaled ${t.runtime.tailscaleVersion}, Headscale ${t.runtime.headscaleVersion}`
  }
}

const realTables = (samples: ReadonlyArray<RealSample>) => {
  heading(`Real tailscaled: ADD to a Running tailnet node (ms, ${samples.length} runs)`)
  const add = samples.map((s) => s.add.ms)
  const daemon = samples.map((s) => elapsedMs(s.daemon.pid, s.daemon.running))
  console.log(table(["what", "p50", "p95"], [
    ["ADD, exec to exit (the tailnet address in the result)", ...p50p95(add)],
    ["tailscaled: tailscaled.pid written to Running (IPN bus)", ...p50p95(daemon)],
    ["our overhead (ADD minus the daemon's time)", ...p50p95(add.map((a, j) => a - daemon[j]!))],
    ["DEL (logout, stop tailscaled, remove its folder)", ...p50p95(samples.map((s) => s.del.ms))]
  ]))

  heading("Where the real ADD and DEL go, seen from outside (ms)")
  const phase = (f: (s: RealSample) => number) => p50p95(samples.map(f))
  const d = (s: RealSample) => s.daemon
  const start = (s: RealSample) => d(s).start ?? d(s).answer
  const loggedIn = (s: RealSample) => d(s).loggedIn ?? start(s)
  const starting = (s: RealSample) => d(s).starting ?? loggedIn(s)
  const stopped = (s: RealSample) => s.leave.stopped ?? s.del.start
  const loggedOut = (s: RealSample) => s.leave.loggedOut ?? stopped(s)
  console.log(table(["phase", "p50", "p95", "counted as"], [
    ["ADD: exec -> member folder made (runtime start, module load, config)", ...phase((s) => elapsedMs(s.add.start, d(s).folder ?? d(s).pid)), "ours"],
    ["  member folder -> tailscaled spawned (its log opened)", ...phase((s) => elapsedMs(d(s).folder ?? d(s).pid, d(s).spawn ?? d(s).pid)), "ours"],
    ["  spawned -> tailscaled.pid written (the spawn returns)", ...phase((s) => elapsedMs(d(s).spawn ?? d(s).pid, d(s).pid)), "ours"],
    ["  tailscaled.pid -> IPN bus answers (nsenter, unshare, /etc overlay, tailscaled start)", ...phase((s) => elapsedMs(d(s).pid, d(s).answer)), "daemon"],
    ["  bus answers -> `start` done (the plugin: status, status, bus; tailscaled: start)", ...phase((s) => elapsedMs(d(s).answer, start(s))), "daemon"],
    ["  `start` -> login finished (key, /machine/register at Headscale)", ...phase((s) => elapsedMs(start(s), loggedIn(s))), "daemon"],
    ["  login finished -> Starting (the first netmap from Headscale)", ...phase((s) => elapsedMs(loggedIn(s), starting(s))), "daemon"],
    ["  Starting -> Running (router, DNS, DERP connection)", ...phase((s) => elapsedMs(starting(s), d(s).running)), "daemon"],
    ["  Running -> exit (the plugin reads the bus, status, result, exit)", ...phase((s) => elapsedMs(d(s).running, s.add.end)), "ours"],
    ["DEL: exec -> the logout reaches tailscaled (Stopped)", ...phase((s) => elapsedMs(s.del.start, stopped(s))), ""],
    ["  Stopped -> logged out (NeedsLogin: Headscale took the logout)", ...phase((s) => elapsedMs(stopped(s), loggedOut(s))), ""],
    ["  logged out -> tailscaled gone (SIGTERM, its shutdown)", ...phase((s) => elapsedMs(loggedOut(s), s.leave.gone)), ""],
    ["  tailscaled gone -> exit (folder removed, exit)", ...phase((s) => elapsedMs(s.leave.gone, s.del.end)), ""]
  ]))
}

/** A trivial program compiled the way scripts/compile-binary compiles ours: the Bun runtime alone. */
const buildTrivial = (): string | undefined => {
  fs.writeFileSync(path.join(dir, "trivial.ts"), `process.stdout.write("")\n`)
  const file = path.join(dir, "trivial")
  const built = spawnSync("bun", ["build", "trivial.ts", "--compile", "--minify", "--bytecode", "--outfile", file], { cwd: dir, encoding: "utf8" })
  return built.status === 0 ? file : undefined
}

/** What any exec costs here, interleaved: the harness, the Bun runtime, our start-up. */
const floorsTable = async () => {
  const trivial = buildTrivial()
  const runs = { harness: [] as Array<number>, trivial: [] as Array<number>, version: [] as Array<number> }
  for (let k = 0; k < 20; k++) {
    runs.harness.push((await exec("/bin/true", [], {})).ms)
    if (trivial !== undefined) runs.trivial.push((await exec(trivial, [], {})).ms)
    runs.version.push((await exec(ours, [], { CNI_COMMAND: "VERSION" })).ms)
  }
  heading("What any exec costs here (20 of each, interleaved, ms)")
  console.log(table(["exec to exit", "p50", "p95"], [
    ["/bin/true (the harness: spawn, wait)", ...p50p95(runs.harness)],
    ["a trivial Bun binary (+ the Bun runtime's start and exit)", ...p50p95(runs.trivial)],
    ["containerscale VERSION (+ our modules, no config)", ...p50p95(runs.version)]
  ]))
}

const traceTable = (traces: ReadonlyArray<Awaited<ReturnType<typeof tracedOnce>>>) => {
  heading(`The plugin's own steps: ${traces.length} ADDs under strace, main thread only (medians, ms)`)
  const calls = ["status (held until the backend is ready)", "status", "watch-ipn-bus", "start", "login-interactive, then the wait for Running", "status (for the result)"]
  const rows: Array<[string, Array<number>]> = [
    ["exec -> spawn of tailscaled (runtime start, module load, config, folder)", traces.map((t) => t.spawned - t.exec0)],
    ["spawn -> first LocalAPI connect (socket made; the plugin looks every 10 ms)", traces.map((t) => t.answered[0]! - t.spawned)]
  ]
  const count = Math.min(...traces.map((t) => t.answered.length))
  for (let j = 0; j < count; j++) {
    const label = count === calls.length ? calls[j]! : `LocalAPI call ${j + 1}`
    rows.push([`  ${label}`, traces.map((t) => (j + 1 < count ? t.answered[j + 1]! : t.exited) - t.answered[j]!)])
  }
  rows.push(["total under strace (exec to exit)", traces.map((t) => t.total)])
  console.log(table(["step (connect to next connect)", "median"], rows.map(([label, v]) => [label, ms(median(v))])))
  const failed = traces.reduce((n, t) => n + t.failed, 0)
  note(`\nConnects to the socket that failed: ${failed} in ${traces.length} ADDs.`)
}

const main = async () => {
  console.log("# containerscale CNI plugin, member mode: the real tailscaled and the stand-in\n")
  console.log(machine())
  const real = tailnetRuntimeAvailable() ? await startReal() : undefined
  if (real === undefined) note("no Go to build the real tailscaled and Headscale, and none cached: the stand-in only")
  const up = JSON.parse(execFileSync(testnetCli, ["up", "--state", testnetState], { encoding: "utf8" })) as { loginServer: string; authKey: string }
  testnetUp = true
  console.log(`${N} ADD + DEL on each after ${WARMUPS} warm-ups, interleaved${real === undefined ? "" : `; real: ${real.versions}`}`)

  const reals: Array<RealSample> = []
  const standIns: Array<StandInSample> = []
  for (let i = -WARMUPS; i < N; i++) {
    const k = i + WARMUPS
    const steps = [
      async () => {
        if (real === undefined) return
        const s = await realOnce(real, `r${k}`)
        if (i >= 0) reals.push(s)
      },
      async () => {
        const s = await standInOnce(up, `s${k}`)
        if (i >= 0) standIns.push(s)
      }
    ]
    // who goes first flips every iteration
    for (const step of k % 2 === 0 ? steps : steps.reverse()) await step()
  }

  if (real !== undefined) {
    const pings: Array<{ ms: number; rtt: number }> = []
    let unanswered = 0
    for (let k = 0; k < PINGS; k++) {
      const p = await pingOnce(real, k)
      if (p === undefined) unanswered++
      else pings.push(p)
    }
    const strace = TRACED > 0 && spawnSync("strace", ["-V"]).status === 0
    const traces = []
    for (let k = 0; strace && k < TRACED; k++) traces.push(await tracedOnce(real, k))

    realTables(reals)
    await floorsTable()
    if (traces.length > 0) traceTable(traces)
    else note("\n(strace is not installed, or BENCH_MEMBER_TRACE=0: no per-call breakdown)")
    if (PINGS > 0) {
      heading(`Real tailnet: the second container's ADD returning -> the first one's first ping reply (${PINGS} pairs)`)
      console.log(table(["what", "p50", "max"], [
        ["ADD returned -> first echo reply (ms)", ms(median(pings.map((x) => x.ms))), ms(Math.max(...pings.map((x) => x.ms)))],
        ["  that echo's round trip as ping reports it (ms)", ms(median(pings.map((x) => x.rtt))), ms(Math.max(...pings.map((x) => x.rtt)))]
      ]))
      if (unanswered > 0) note(`\n${unanswered} of ${PINGS} echo requests got no reply within 15 s.`)
    }
  }

  heading(`Stand-in tailscaled: ADD to a Running node (ms, ${standIns.length} runs)`)
  console.log(table(["what", "p50", "p95"], [
    ["ADD, exec to exit (the tailnet address in the result)", ...p50p95(standIns.map((s) => s.add))],
    ["stand-in tailscaled: its process start to Running (its log)", ...p50p95(standIns.map((s) => s.running))],
    ["our overhead (ADD minus the stand-in's time)", ...p50p95(standIns.map((s) => s.add - s.running))],
    ["DEL (logout, stop tailscaled, remove its folder)", ...p50p95(standIns.map((s) => s.del))]
  ]))
}

try {
  await main()
} catch (e) {
  console.error(`member benchmark failed: ${(e as Error).stack ?? String(e)}`)
  process.exitCode = 1
} finally {
  await cleanup()
}
note(`\nContainerScale slept a fixed 1000 ms after starting tailscaled. member benchmark done in ${(elapsedMs(began) / 1000).toFixed(1)} s (${loadavg()})`)

import { Duration, Effect, Option, Redacted, Schedule, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { spawnDaemon } from "#run"
import { AlreadyAttached, InvalidNetworkConfig, MemberFailure } from "../errors.ts"
import { AUTH_KEY_ENV } from "../state.ts"
import { LocalApi } from "./LocalApi.ts"
import { backendStateOf, newPrefs, NotifyWatchOpt, type Prefs, type Status } from "./localApiSchemas.ts"
import {
  daemonsOf,
  earlierIdentity,
  fail,
  folderFix,
  folderProblem,
  isOurDaemon,
  lazyScan,
  MAX_SOCKET_PATH,
  memberIdentity,
  type MemberPaths,
  memberPaths,
  MemberRecord,
  pathsIn,
  prepareFolder,
  processGone,
  readPid,
  readRecord,
  writeRecord
} from "./memberFolder.ts"

export { folderProblem, isOurDaemon, memberFolderProblems, memberIdentity, memberPaths, MemberRecord, sweepMemberRoot } from "./memberFolder.ts"

/**
 * Member mode on one node: one tailscaled per container, running inside the container's network
 * namespace, with its own folder under the node's state directory (0700) holding its state,
 * socket, pid and log. It is brought up through the LocalAPI with the auth key in the `start`
 * body, so the key is never on a command line, and the bring-up waits for Running on the IPN bus.
 * The folder holds its record before tailscaled starts, and DEL and GC also find a daemon by the
 * socket on its command line, so a plugin killed at any moment leaves nothing they cannot find.
 * The member root and folders are never used through a symbolic link, nor when another user owns
 * them or can write to them.
 */

export const TUN_NAME = "tailscale0"

export interface MemberPrefs {
  readonly hostname: string
  readonly loginServer?: string | undefined
  readonly tags?: ReadonlyArray<string> | undefined
  readonly acceptDns?: boolean | undefined
  readonly acceptRoutes?: boolean | undefined
  readonly advertiseRoutes?: ReadonlyArray<string> | undefined
  readonly shieldsUp?: boolean | undefined
}

/** What bringing a started tailscaled to Running needs. */
export interface BringUpRequest {
  readonly prefs: MemberPrefs
  readonly authKey: Redacted.Redacted<string> | undefined
  /** what the user does when a new node has no key, in the runtime's words */
  readonly missingKeyFix?: string | undefined
  /** where a new key goes, for the message when the control server refuses one */
  readonly keySource?: string | undefined
  readonly timeout: Duration.Input
}

export interface JoinRequest extends BringUpRequest {
  /** the member folders' root: `memberRoot(stateDir)` */
  readonly stateDir: string
  readonly network: string
  readonly containerId: string
  readonly ifname: string
  readonly netns: string
  /**
   * names the folder: `memberIdentity` of the network's and the workload's names when the runtime
   * gives them, else of the network's name and the container id
   */
  readonly identity: string
  /** keep the state (and so the node) after leaving: the same identity comes back as the same node */
  readonly persistent: boolean
  readonly tailscaled: string
  readonly userspace: boolean
  readonly extraFlags?: ReadonlyArray<string> | undefined
}

export interface MemberNode {
  readonly nodeId: string
  readonly addresses: ReadonlyArray<string>
  /** the MagicDNS name without its trailing dot */
  readonly dnsName: string
  readonly magicDnsSuffix: string | undefined
  /** the TUN device inside the container; undefined in userspace networking */
  readonly tun: string | undefined
  readonly socket: string
  readonly pid: number
}

const noAuthKey = (request: BringUpRequest) =>
  new InvalidNetworkConfig({
    message: `a new tailnet node needs an auth key, and there is no auth key: ${
      request.missingKeyFix ?? `set ${AUTH_KEY_ENV} or ${AUTH_KEY_ENV}_FILE in the plugin's environment`
    }`
  })

const prefsFor = (p: MemberPrefs): Prefs => ({
  ...newPrefs(),
  ControlURL: p.loginServer ?? "",
  Hostname: p.hostname,
  // tags come from the auth key: Headscale 0.28+ refuses a pre-auth-key login that also asks for tags
  AdvertiseTags: null,
  AdvertiseRoutes: p.advertiseRoutes === undefined || p.advertiseRoutes.length === 0 ? null : [...p.advertiseRoutes],
  CorpDNS: p.acceptDns ?? false,
  RouteAll: p.acceptRoutes ?? false,
  ShieldsUp: p.shieldsUp ?? false,
  RunSSH: false,
  WantRunning: true
})

/** How far a bring-up got, for the message when its time runs out. */
interface Progress {
  phase: "socket" | "login"
  /** why the socket did not answer yet */
  socketError: string
  state: string
  /** the daemon's last login error: its "login-state" health warning (tailscaled retries transport errors silently) */
  loginError: string | undefined
}

const newProgress = (): Progress => ({ phase: "socket", socketError: "no socket yet", state: "NoState", loginError: undefined })

/** Asks every 10 ms until tailscaled answers on its socket, with its first status; the caller bounds it. */
const awaitSocket = (paths: MemberPaths, pid: number, progress: Progress): Effect.Effect<Status, MemberFailure, LocalApi> =>
  Effect.gen(function*() {
    const api = (yield* LocalApi).client({ socket: paths.socket, timeout: "2 seconds" })
    const gone = new MemberFailure({ message: `tailscaled exited right after starting` })
    return yield* Effect.suspend(() => {
      if (processGone(pid)) return Effect.fail(gone)
      if (!fs.existsSync(paths.socket)) return Effect.fail(undefined)
      return api.status({ peers: false }).pipe(Effect.tapError((e) => Effect.sync(() => progress.socketError = e.message)), Effect.mapError(() => undefined))
    }).pipe(
      Effect.retry({ schedule: Schedule.spaced("10 millis"), while: (e) => e !== gone }),
      Effect.catch(() => fail(`tailscaled exited right after starting: ${logTail(paths.log)}`))
    )
  })

const logTail = (file: string) => {
  try {
    const lines = fs.readFileSync(file, "utf8").trim().split("\n")
    return `${lines.slice(-3).join(" | ")} (log: ${file})`
  } catch {
    return `see ${file}`
  }
}

const serverName = (loginServer: string | undefined) => loginServer || "the Tailscale control server (no loginServer set)"

/** What to do about a login the control server refused, from its words (Headscale's and Tailscale's). */
const refusalFix = (said: string, loginServer: string | undefined, keySource = `${AUTH_KEY_ENV} (or the network's "authKey")`) => {
  const newKey = `create a new auth key on ${serverName(loginServer)} and hand it over in ${keySource}`
  if (/expired/i.test(said)) return `the auth key has expired: ${newKey}`
  if (/already used|been used/i.test(said)) {
    return `the auth key was single-use and is spent: ${newKey}, reusable (headscale preauthkeys create --reusable) for more than one container`
  }
  if (/tag/i.test(said)) return `the control server does not permit these tags: tags come from the auth key, so create one with the tags the node should carry`
  if (/invalid|not found|unknown|not valid/i.test(said)) {
    return `${serverName(loginServer)} does not know this auth key (revoked, its user deleted, or made for another control server): ${newKey}`
  }
  return `check the auth key (${newKey}) and "loginServer"`
}

/** The message when the whole bring-up ran out of time, naming what it waited for. */
const timeoutMessage = (request: BringUpRequest, paths: MemberPaths, progress: Progress) => {
  const within = Duration.format(Duration.fromInputUnsafe(request.timeout))
  if (progress.phase === "socket") {
    return `tailscaled did not answer on ${paths.socket} within ${within} (${progress.socketError}): ${logTail(paths.log)}`
  }
  const why = progress.loginError === undefined ? "" : ` (${progress.loginError})`
  return `tailscaled did not reach Running within ${within} (last state ${progress.state}): ` +
    `could it reach the login server ${serverName(request.prefs.loginServer)}?${why} ` +
    `Check "loginServer" and that the container's network reaches it, or raise "timeoutSeconds". ${logTail(paths.log)}`
}

/**
 * Brings a started tailscaled to Running: opens the IPN bus first, then `start` with complete
 * prefs and the key, then `login-interactive` for a new node, and reads the bus until Running.
 * An ErrMessage (what the control server answered) or NeedsMachineAuth ends it with a clear
 * error; the caller bounds it in time.
 */
const bringUp = (request: BringUpRequest, paths: MemberPaths, before: Status, progress: Progress) =>
  Effect.scoped(Effect.gen(function*() {
    progress.phase = "login"
    const api = (yield* LocalApi).client({ socket: paths.socket, timeout: request.timeout })
    progress.state = before.BackendState
    const wanted = prefsFor(request.prefs)
    if (before.BackendState === "Running" && before.HaveNodeKey === true) {
      const current = yield* api.prefs()
      if (current.ControlURL === wanted.ControlURL && current.Hostname === wanted.Hostname) return
    }
    if (before.HaveNodeKey !== true && request.authKey === undefined) return yield* noAuthKey(request)
    const bus = yield* api.watchIpnBus(NotifyWatchOpt.InitialState | NotifyWatchOpt.InitialHealthState)
    yield* api.start({ authKey: request.authKey, updatePrefs: wanted })
    if (before.HaveNodeKey !== true) yield* api.loginInteractive()
    yield* Stream.runForEachWhile(bus, (n) =>
      Effect.gen(function*() {
        if (n.ErrMessage !== null && n.ErrMessage !== undefined && n.ErrMessage !== "") {
          return yield* fail(`the control server refused the node ("${n.ErrMessage}"): ${refusalFix(n.ErrMessage, request.prefs.loginServer, request.keySource)}`)
        }
        const login = n.Health?.Warnings?.["login-state"]
        if (login !== undefined) progress.loginError = login.Text
        if (n.State === null || n.State === undefined) return true
        progress.state = backendStateOf(n.State) ?? progress.state
        if (progress.state === "NeedsMachineAuth") {
          return yield* fail(`the node needs approval by an admin of the tailnet (NeedsMachineAuth): approve it or use a pre-authorized key`)
        }
        return progress.state !== "Running"
      }))
    if (progress.state !== "Running") {
      return yield* fail(`tailscaled closed its IPN bus before Running (last state ${progress.state}): ${logTail(paths.log)}`)
    }
  }))

const describe = (request: JoinRequest, paths: MemberPaths, pid: number) =>
  Effect.gen(function*() {
    const status = yield* (yield* LocalApi).client({ socket: paths.socket, timeout: request.timeout }).status({ peers: false })
    const addresses = status.Self.TailscaleIPs ?? status.TailscaleIPs ?? []
    if (addresses.length === 0) return yield* fail(`tailscaled is Running but has no tailnet address yet`)
    const tags = status.Self.Tags ?? []
    const missing = (request.prefs.tags ?? []).filter((t) => !tags.includes(t))
    if (missing.length > 0) {
      return yield* fail(
        `the node joined with tags [${tags.join(", ")}] but the network asks for ${missing.join(", ")}: ` +
          `tags come from the auth key, so use a key created with them (headscale preauthkeys create --tags ${(request.prefs.tags ?? []).join(",")})`
      )
    }
    return {
      nodeId: status.Self.ID,
      addresses,
      dnsName: status.Self.DNSName.replace(/\.$/, ""),
      magicDnsSuffix: status.CurrentTailnet?.MagicDNSSuffix ?? (status.MagicDNSSuffix || undefined),
      tun: request.userspace ? undefined : TUN_NAME,
      socket: paths.socket,
      pid
    } satisfies MemberNode
  })

/**
 * Starts tailscaled for the container and brings it to Running. A failure at any step logs the
 * node out, stops the daemon and removes what was made (the folder too, unless it held a
 * persistent identity from before).
 */
export const joinMember = Effect.fnUntraced(function*(request: JoinRequest) {
  const paths = memberPaths(request.stateDir, request.identity)
  const rootProblem = folderProblem(request.stateDir)
  if (rootProblem !== undefined) {
    return yield* new InvalidNetworkConfig({ message: `the member folders' root ${rootProblem}: ${folderFix}` })
  }
  const folder = folderProblem(paths.dir)
  if (folder !== undefined) return yield* fail(`the member folder ${folder}: ${folderFix}`)
  const existing = readRecord(paths.record)
  if (existing !== undefined) {
    const earlier = earlierIdentity(request.identity)
    if (existing.network !== request.network || (existing.identity !== request.identity && existing.identity !== earlier.identity)) {
      return yield* fail(
        `the member folder ${paths.dir} holds ${existing.identity} of network ${existing.network}, not ${request.identity} of ${request.network}: ` +
          `DEL container ${existing.containerId} of ${existing.network} first`
      )
    }
    const running = daemonsOf(paths)
    if (running.length > 0) {
      const recorded = isOurDaemon(readPid(paths.pid) ?? existing.pid, paths.socket)
      if (recorded || existing.containerId !== request.containerId) {
        return yield* new AlreadyAttached({
          message: existing.containerId === request.containerId
            ? `container ${request.containerId} is already a tailnet member (tailscaled pid ${running[0]}): DEL it first`
            : `the identity ${request.identity} is in use by container ${existing.containerId}: DEL that container first`
        })
      }
      // an earlier ADD of this container was killed after starting tailscaled and before writing its pid
      for (const pid of running) yield* stopDaemon(pid)
    }
  }
  if (Buffer.byteLength(paths.socket) > MAX_SOCKET_PATH) {
    return yield* new InvalidNetworkConfig({
      message: `the member socket ${paths.socket} is longer than a unix socket path can be (${MAX_SOCKET_PATH} bytes): ` +
        `use a shorter state directory`
    })
  }
  const existedBefore = fs.existsSync(paths.state)
  if (!existedBefore && request.authKey === undefined) return yield* noAuthKey(request)
  const missing = memberCommandMissing(request.tailscaled)
  if (missing !== undefined) {
    return yield* fail(`tailscaled not found: ${missing}: install tailscale on the node, or set "tailscaledPath" to the absolute path of tailscaled`)
  }
  const record: MemberRecord = {
    network: request.network,
    containerId: request.containerId,
    ifname: request.ifname,
    netns: request.netns,
    identity: request.identity,
    persistent: request.persistent,
    tailscaled: request.tailscaled,
    userspace: request.userspace,
    extraFlags: request.extraFlags ?? []
  }
  // made whole or not at all, so a failure here has nothing to undo (and must not remove the
  // folder of another ADD that made it first)
  yield* prepareFolder(request.stateDir, paths, record)
  const progress = newProgress()
  return yield* Effect.gen(function*() {
    const pid = yield* startDaemon(request.stateDir, record)
    const before = yield* awaitSocket(paths, pid, progress)
    yield* bringUp(request, paths, before, progress)
    return yield* describe(request, paths, pid)
  }).pipe(
    Effect.timeoutOrElse({ duration: request.timeout, orElse: () => fail(timeoutMessage(request, paths, progress)) }),
    Effect.onError(() => leaveMember({ stateDir: request.stateDir, identity: request.identity, keepState: request.persistent && existedBefore }).pipe(Effect.ignore))
  )
})

/**
 * The environment of every member tailscaled, and nothing else of the plugin's: no auth key, no
 * runtime variables. Its log identity stays in its folder (tailscaled writes `tailscaled.log.conf`
 * to `TS_LOGS_DIR`, else to /var/lib/tailscale), logs are never uploaded, and D-Bus points nowhere,
 * so it cannot reach the node's systemd-resolved or NetworkManager.
 */
export const daemonEnv = (dir: string): Record<string, string> => ({
  PATH: DAEMON_PATH,
  HOME: dir,
  TS_LOGS_DIR: path.join(dir, "logs"),
  TS_NO_LOGS_NO_SUPPORT: "true",
  DBUS_SYSTEM_BUS_ADDRESS: "unix:path=/nonexistent"
})

const DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

const isExecutableFile = (file: string) => {
  try {
    fs.accessSync(file, fs.constants.X_OK)
    return fs.statSync(file).isFile()
  } catch {
    return false
  }
}

/** Why `command` (an absolute path, or a name looked up along the daemon's PATH) cannot be run for a member, if it cannot. */
export const memberCommandMissing = (command: string): string | undefined => {
  if (path.isAbsolute(command)) return isExecutableFile(command) ? undefined : `${command} does not exist or is not executable`
  return DAEMON_PATH.split(":").some((d) => isExecutableFile(path.join(d, command)))
    ? undefined
    : `no executable "${command}" in ${DAEMON_PATH}`
}

/**
 * Run inside a private mount namespace before tailscaled (`$1` is the member's folder, `$2`
 * tailscaled), so that a tailscaled feature acting on files for a tailnet peer can change nothing
 * of the node:
 * - every mount of the node is made read-only, except /proc (the sysctls tailscaled writes are the
 *   container's network namespace's);
 * - /run is an empty tmpfs: no socket of the node (the container runtime's, D-Bus, systemd) is
 *   in reach, and iptables has its lock file;
 * - the member's folder is the one writable path of the node (bound again from an open
 *   descriptor, so a folder under /run stays in view);
 * - a tmpfs in the folder's `etc` holds an overlay's upper layer for /etc, so whatever tailscaled
 *   writes there (its DNS manager's resolv.conf and backup, the clean-up it runs at every start)
 *   stays with this container and goes when the daemon does. Its resolv.conf is a plain copy
 *   without comments, since a comment naming resolvconf or systemd-resolved makes tailscaled hand
 *   DNS to those, so it always writes the file itself, in the overlay.
 * The daemon runs from the member folder.
 */
const PRIVATE_VIEW = 'dir="$1" && shift && exec 3<"$dir" && ' +
  // mountinfo's fifth field is the mount point (spaces and the like as octal escapes, which %b reads), the sixth its options
  'while read -r _ _ _ _ m o _; do case "$m" in /proc|/proc/*|/run|/run/*) continue;; esac; case ",$o," in *,rw,*) ;; *) continue;; esac; ' +
  'case "$m" in *\\*) m="$(printf "%b" "$m")";; esac; mount -o remount,bind,ro "$m" || exit 1; done </proc/self/mountinfo && ' +
  "mount -t tmpfs -o mode=0755,nosuid,nodev containerscale /run && " +
  'mkdir -p "$dir" && mount --no-canonicalize --bind /proc/self/fd/3 "$dir" && exec 3<&- && mount -o remount,bind,rw "$dir" && ' +
  'etc="$dir/etc" && mount -t tmpfs -o mode=0700 containerscale "$etc" && mkdir "$etc/upper" "$etc/work" && ' +
  'mount -t overlay containerscale -o "lowerdir=/etc,upperdir=$etc/upper,workdir=$etc/work" /etc && ' +
  'conf="$(grep -v "^#" /etc/resolv.conf 2>/dev/null || true)" && rm -f /etc/resolv.conf && printf "%s\\n" "$conf" > /etc/resolv.conf && ' +
  'cd "$dir" && exec "$@"'

/**
 * Starts the member's tailscaled inside its namespace, in a session of its own, and records its
 * pid: the record (without a pid) is written before the daemon starts, the pid after. The state in
 * its folder makes a restarted daemon come back as the same node.
 */
export const startDaemon = Effect.fnUntraced(function*(stateDir: string, record: MemberRecord) {
  const paths = memberPaths(stateDir, record.identity)
  const args = [
    `--net=${record.netns}`,
    "--",
    "unshare", "--mount", "--propagation", "private", "--",
    "sh", "-c", PRIVATE_VIEW, "containerscale-member", paths.dir,
    record.tailscaled,
    `--state=${paths.state}`,
    `--statedir=${paths.dir}`,
    `--socket=${paths.socket}`,
    `--tun=${record.userspace ? "userspace-networking" : TUN_NAME}`,
    "--port=0",
    "--no-logs-no-support",
    ...record.extraFlags
  ]
  const problem = folderProblem(stateDir) ?? folderProblem(paths.dir)
  if (problem !== undefined) return yield* fail(`${problem}: ${folderFix}`)
  const { pid: _, ...intent } = record
  yield* Effect.try({
    try: () => {
      fs.rmSync(paths.socket, { force: true })
      fs.rmSync(paths.pid, { force: true })
      fs.mkdirSync(paths.etc, { recursive: true, mode: 0o700 })
      fs.mkdirSync(path.join(paths.dir, "logs"), { recursive: true, mode: 0o700 })
      // the record without a pid before the daemon exists: a plugin killed before it writes the pid
      // leaves a daemon that DEL and GC still find, by this record and the socket on its command line
      writeRecord(paths.record, intent)
    },
    catch: (e) => new MemberFailure({ message: `cannot prepare ${paths.dir}: ${(e as Error).message}` })
  })
  const pid = yield* Effect.tryPromise({
    try: () => spawnDaemon("nsenter", args, { logFile: paths.log, env: daemonEnv(paths.dir) }),
    catch: (e) => new MemberFailure({ message: `cannot start ${record.tailscaled}: ${(e as Error).message}` })
  })
  yield* Effect.sync(() => {
    fs.writeFileSync(paths.pid, `${pid}\n`, { mode: 0o600 })
    writeRecord(paths.record, { ...intent, pid })
  })
  return pid
})

/** Waits until a started tailscaled answers on its socket and brings it to Running, within `request.timeout`. */
export const upDaemon = (paths: MemberPaths, pid: number, request: BringUpRequest) => {
  const progress = newProgress()
  return Effect.gen(function*() {
    yield* bringUp(request, paths, yield* awaitSocket(paths, pid, progress), progress)
  }).pipe(Effect.timeoutOrElse({ duration: request.timeout, orElse: () => fail(timeoutMessage(request, paths, progress)) }))
}

/** Waits until a started daemon answers on its socket, bounded by `timeout`. */
export const awaitDaemon = (stateDir: string, identity: string, pid: number, timeout: Duration.Input) => {
  const paths = memberPaths(stateDir, identity)
  const progress = newProgress()
  return awaitSocket(paths, pid, progress).pipe(
    Effect.timeoutOrElse({
      duration: timeout,
      orElse: () => fail(`tailscaled did not answer on ${paths.socket} (${progress.socketError}): ${logTail(paths.log)}`)
    })
  )
}

/**
 * Takes a member off the tailnet: logs out (an ephemeral node disappears from the control plane
 * at once) unless its state is kept, stops tailscaled, removes its socket and pid, and removes the
 * folder unless `keepState`. Succeeds when any of it is already gone.
 */
export const leaveMember = Effect.fnUntraced(function*(request: { readonly stateDir: string; readonly identity: string; readonly keepState: boolean }) {
  const paths = memberPaths(request.stateDir, request.identity)
  // never through a link, nor in another user's folder
  const problem = folderProblem(request.stateDir) ?? folderProblem(paths.dir)
  if (problem !== undefined) return yield* fail(`${problem}: left as it is; ${folderFix}`)
  const running = daemonsOf(paths)
  if (running.length > 0 && !request.keepState && fs.existsSync(paths.socket)) {
    yield* (yield* LocalApi).client({ socket: paths.socket, timeout: "5 seconds" }).logout().pipe(Effect.ignore)
  }
  for (const pid of running) yield* stopDaemon(pid)
  yield* Effect.sync(() => {
    for (const f of [paths.socket, paths.pid]) fs.rmSync(f, { force: true })
    if (!request.keepState) fs.rmSync(paths.dir, { recursive: true, force: true })
  })
})

/** SIGTERM, then SIGKILL after 5 s; waits until the process is gone. */
const stopDaemon = (pid: number) =>
  Effect.gen(function*() {
    const signal = (s: NodeJS.Signals) => {
      try {
        process.kill(pid, s)
      } catch {
        // already gone
      }
    }
    const exited = Effect.sync(() => processGone(pid)).pipe(Effect.repeat({ schedule: Schedule.spaced("5 millis"), until: (gone) => gone }))
    signal("SIGTERM")
    yield* exited.pipe(
      Effect.timeoutOrElse({ duration: "5 seconds", orElse: () => Effect.andThen(Effect.sync(() => signal("SIGKILL")), exited) }),
      Effect.timeoutOrElse({ duration: "7 seconds", orElse: () => fail(`tailscaled (pid ${pid}) did not exit after SIGKILL`) })
    )
  })

/**
 * The member folders under `stateDir` with their records; `running` also when the daemon's pid
 * was never written (found by its socket). Folders that must not be used (`folderProblem`) and
 * folders being made are left out.
 */
export const listMembers = (stateDir: string): ReadonlyArray<MemberRecord & { readonly running: boolean }> => {
  if (folderProblem(stateDir) !== undefined) return []
  let names: Array<string>
  try {
    names = fs.readdirSync(stateDir)
  } catch {
    return []
  }
  const scan = lazyScan()
  return names.flatMap((name) => {
    if (name.startsWith(".")) return []
    const paths = pathsIn(path.join(stateDir, name))
    if (folderProblem(paths.dir) !== undefined) return []
    const record = readRecord(paths.record)
    return record === undefined ? [] : [{ ...record, running: daemonsOf(paths, scan).length > 0 }]
  })
}

/** The member of an attachment, found by its record (DEL may come without the workload's name). */
export const findMember = (stateDir: string, containerId: string, ifname: string) =>
  Option.fromNullishOr(listMembers(stateDir).find((m) => m.containerId === containerId && m.ifname === ifname))

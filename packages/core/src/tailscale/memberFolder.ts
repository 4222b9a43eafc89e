import { Effect, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { InvalidNetworkConfig, MemberFailure } from "../errors.ts"
import { fnv1a64 } from "../hash.ts"

/**
 * Where a member lives on disk and which process is its daemon: the identity and its folder
 * (escaped, shortened with a hash when long, checked before use: never a link, never another
 * user's), the record in it, and the tailscaled found by its pid or by the socket on its command
 * line. The lifecycle that uses them is tailscaled.ts.
 */

/** What a member folder records, so DEL and GC find the attachment again. */
export const MemberRecord = Schema.Struct({
  network: Schema.String,
  containerId: Schema.String,
  ifname: Schema.String,
  netns: Schema.String,
  identity: Schema.String,
  persistent: Schema.Boolean,
  /** how tailscaled was started, so a supervisor can start it again the same way */
  tailscaled: Schema.String,
  userspace: Schema.Boolean,
  extraFlags: Schema.Array(Schema.String),
  pid: Schema.optional(Schema.Number)
})
export type MemberRecord = typeof MemberRecord.Type

/**
 * The longest folder name kept as it is: the socket path in it must stay within the 107 bytes of a
 * unix socket path, under state directories longer than the default too.
 */
const MAX_FOLDER = 40

const escapeByte = (b: number) => `%${b.toString(16).toUpperCase().padStart(2, "0")}`

/**
 * One part of an identity, escaped so that no two parts give the same text and no part holds the
 * `_` that joins them: letters, digits, `.` and `-` stay, every other byte (of its UTF-8) becomes
 * `%XX` (upper-case hex), `_` and `%` too, and so does a leading `.` (no hidden folders).
 */
const escapePart = (part: string) => {
  let out = ""
  for (const b of new TextEncoder().encode(part)) {
    const c = String.fromCharCode(b)
    out += /[A-Za-z0-9-]/.test(c) || (c === "." && out !== "") ? c : escapeByte(b)
  }
  return out
}

/**
 * A member's identity from its parts (the network's name, then the workload's: its namespace and
 * name, or the container id): each part escaped, joined by `_`. The same parts always give the
 * same identity and different parts different ones, so it names the member's folder and, for a
 * persistent identity, its node. Parts of letters, digits, `.` and `-` come out as they went in,
 * so `net_web` is the identity earlier versions gave the container `web` of `net`.
 */
export const memberIdentity = (parts: ReadonlyArray<string>): string => parts.map(escapePart).join("_")

/** An identity as `memberIdentity` makes it (earlier versions' records hold raw text). */
const ESCAPED = /^(?!\.)(?:[A-Za-z0-9._-]|%[0-9A-F]{2})*$/

/** The identity as earlier versions wrote it (the raw parts joined by `_`), with its network. */
export const earlierIdentity = (identity: string): { readonly identity: string; readonly network: string | undefined } => {
  if (!ESCAPED.test(identity)) return { identity, network: undefined }
  try {
    const parts = identity.split("_").map(decodeURIComponent)
    return { identity: parts.join("_"), network: parts[0] }
  } catch {
    return { identity, network: undefined }
  }
}

/** What `file` is, itself (a symbolic link is not followed); undefined when it cannot be told. */
const lstat = (file: string): fs.Stats | undefined => {
  try {
    return fs.lstatSync(file)
  } catch {
    return undefined
  }
}

/**
 * Where earlier versions put the folder of an identity: every character outside [A-Za-z0-9_.-]
 * turned into `_` (lossy: several identities shared a folder), and a name longer than 40 its
 * first 27 characters and a hash, or the whole name if that folder exists.
 */
const earlierFolder = (stateDir: string, identity: string) => {
  const name = identity.replace(/[^A-Za-z0-9_.-]/g, "_").replace(/^\.+/, "_")
  if (name.length <= MAX_FOLDER) return path.join(stateDir, name)
  const whole = path.join(stateDir, name.slice(0, 200))
  return lstat(whole) !== undefined ? whole : path.join(stateDir, `${name.slice(0, MAX_FOLDER - 13)}-${fnv1a64(identity).slice(0, 12)}`)
}

/**
 * The folder of an identity: the identity itself, or for a longer one (a 64-digit container id
 * after the network's name, a long pod name) its first 27 characters, `+` (which no identity
 * holds, so no short identity names the same folder) and 12 hex digits of a hash of the whole.
 *
 * A folder an earlier version made for the same identity is used while the new one does not
 * exist, if its record says it is this identity's (this identity, or its parts joined as that
 * version joined them and the same network): the old names were lossy, so the record tells which
 * of the identities that shared a name it belongs to.
 * An identity that is not escaped (an earlier version's record) is looked up where that version
 * put it.
 */
const folderOf = (stateDir: string, identity: string) => {
  if (!ESCAPED.test(identity)) return earlierFolder(stateDir, identity)
  const dir = path.join(stateDir, identity.length <= MAX_FOLDER ? identity : `${identity.slice(0, MAX_FOLDER - 13)}+${fnv1a64(identity).slice(0, 12)}`)
  if (lstat(dir) !== undefined) return dir
  const earlier = earlierIdentity(identity)
  const before = earlierFolder(stateDir, earlier.identity)
  if (before === dir || lstat(before)?.isDirectory() !== true) return dir
  const record = readRecord(path.join(before, "attachment.json"))
  const ours = record !== undefined &&
    (record.identity === identity || (record.identity === earlier.identity && record.network === earlier.network))
  return ours ? before : dir
}

/** What a unix socket path can hold (sun_path, less its terminating NUL). */
export const MAX_SOCKET_PATH = 107

export const memberPaths = (stateDir: string, identity: string) => pathsIn(folderOf(stateDir, identity))

export const pathsIn = (dir: string) => ({
  dir,
  record: path.join(dir, "attachment.json"),
  state: path.join(dir, "tailscaled.state"),
  socket: path.join(dir, "tailscaled.sock"),
  pid: path.join(dir, "tailscaled.pid"),
  log: path.join(dir, "tailscaled.log"),
  /** where the private /etc overlay of the daemon's mount namespace is mounted */
  etc: path.join(dir, "etc")
})
export type MemberPaths = ReturnType<typeof memberPaths>

export const fail = (message: string) => Effect.fail(new MemberFailure({ message }))

export const readRecord = (file: string): MemberRecord | undefined => {
  try {
    return Schema.decodeUnknownSync(MemberRecord)(JSON.parse(fs.readFileSync(file, "utf8")))
  } catch {
    return undefined
  }
}

export const writeRecord = (file: string, record: MemberRecord) => {
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(record), { mode: 0o600 })
  fs.renameSync(`${file}.tmp`, file)
}

/** True when `pid` runs and its command line names `socket` (so a recycled pid is not ours). */
export const isOurDaemon = (pid: number | undefined, socket: string): pid is number => {
  if (pid === undefined) return false
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").some((a) => a === `--socket=${socket}`)
  } catch {
    return false
  }
}

/**
 * Every process whose command line names `--socket=<socket>`, by socket: a member's tailscaled at
 * any stage of its start (setsid, nsenter, unshare, sh and tailscaled exec one another, so it is
 * one pid with these arguments all along), also one whose pid was never written down because the
 * plugin that started it was killed first.
 */
const daemonsBySocket = (): ReadonlyMap<string, ReadonlyArray<number>> => {
  const found = new Map<string, Array<number>>()
  let entries: Array<string>
  try {
    entries = fs.readdirSync("/proc")
  } catch {
    return found
  }
  for (const entry of entries) {
    const pid = Number(entry)
    if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) continue
    let args: Array<string>
    try {
      args = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")
    } catch {
      continue
    }
    for (const a of args) {
      if (!a.startsWith("--socket=") || !runsAsUs(pid)) continue
      const socket = a.slice("--socket=".length)
      found.set(socket, [...(found.get(socket) ?? []), pid])
    }
  }
  return found
}

/** Whether `pid` runs as the plugin's user: another user's process naming our socket is not ours to stop. */
const runsAsUs = (pid: number) => {
  try {
    return process.getuid === undefined || fs.statSync(`/proc/${pid}`).uid === process.getuid()
  } catch {
    return false
  }
}

/**
 * The member's tailscaled: its recorded pid when that is ours, else any process started for its
 * socket (`scan`, shared by the callers that ask about many members; scanned here when absent).
 */
export const daemonsOf = (paths: MemberPaths, scan?: () => ReadonlyMap<string, ReadonlyArray<number>>): ReadonlyArray<number> => {
  const recorded = readPid(paths.pid) ?? readRecord(paths.record)?.pid
  if (isOurDaemon(recorded, paths.socket)) return [recorded]
  return ((scan ?? daemonsBySocket)().get(paths.socket) ?? []).filter((pid) => !processGone(pid))
}

/** Scans /proc once, on first use. */
export const lazyScan = () => {
  let scanned: ReadonlyMap<string, ReadonlyArray<number>> | undefined
  return () => (scanned ??= daemonsBySocket())
}

/**
 * Why `dir` (the member root or a member folder) must not be used, or undefined when it may (or
 * does not exist): a symbolic link, not a directory, owned by another user than the plugin's, or
 * writable by its group or others. Such a folder is never written to, chmod-ed or removed.
 */
export const folderProblem = (dir: string): string | undefined => {
  const st = lstat(dir)
  if (st === undefined) return undefined
  const uid = process.getuid?.()
  if (st.isSymbolicLink()) return `${dir} is a symbolic link`
  if (!st.isDirectory()) return `${dir} is not a directory`
  if (uid !== undefined && st.uid !== uid) return `${dir} is owned by uid ${st.uid}, not by the plugin's uid ${uid}`
  if ((st.mode & 0o022) !== 0) return `${dir} is writable by its group or others (mode ${(st.mode & 0o777).toString(8).padStart(4, "0")})`
  return undefined
}

export const folderFix = "remove it, or make it a directory of the plugin's user with mode 0700"

/** The member root and the member folders in it that must not be used, with why: for `status`. */
export const memberFolderProblems = (stateDir: string): ReadonlyArray<string> => {
  const root = folderProblem(stateDir)
  if (root !== undefined) return [root]
  let names: Array<string>
  try {
    names = fs.readdirSync(stateDir)
  } catch {
    return []
  }
  return names.filter((n) => !n.startsWith(".")).flatMap((n) => folderProblem(path.join(stateDir, n)) ?? [])
}

/** A folder being made: `.new-<pid of its maker>-<random>`, renamed into place with its record inside. */
const NEW_FOLDER = /^\.new-(\d+)-/

/**
 * Removes what a plugin killed while making a member folder left (`.new-*` folders whose maker no
 * longer runs). Never fails.
 */
export const sweepMemberRoot = (stateDir: string): void => {
  if (folderProblem(stateDir) !== undefined) return
  let names: Array<string>
  try {
    names = fs.readdirSync(stateDir)
  } catch {
    return
  }
  for (const name of names) {
    const maker = NEW_FOLDER.exec(name)?.[1]
    const dir = path.join(stateDir, name)
    if (maker === undefined || !processGone(Number(maker)) || folderProblem(dir) !== undefined) continue
    try {
      fs.rmSync(dir, { recursive: true, force: true })
    } catch {
      // tried again next time
    }
  }
}

/**
 * Makes the member root (0700) and checks it and the member folder: fails, changing nothing, when
 * either is a symbolic link, another user's, or writable by group or others. A member folder that
 * is missing is made with its record already in it (made aside, renamed into place), so there is
 * never a folder without one; an existing one has its record (re)written. Either way the record is
 * on disk before tailscaled is started.
 */
export const prepareFolder = (root: string, paths: MemberPaths, record: MemberRecord) =>
  Effect.gen(function*() {
    const rootProblem = folderProblem(root)
    if (rootProblem !== undefined) {
      return yield* new InvalidNetworkConfig({ message: `the member folders' root ${rootProblem}: ${folderFix}` })
    }
    const problem = folderProblem(paths.dir)
    if (problem !== undefined) return yield* fail(`the member folder ${problem}: ${folderFix}`)
    return yield* Effect.try({
      try: () => {
        fs.mkdirSync(root, { recursive: true, mode: 0o700 })
        const made = folderProblem(root)
        if (made !== undefined) throw new Error(made)
        if (lstat(paths.dir) === undefined) {
          const aside = path.join(root, `.new-${process.pid}-${Math.random().toString(36).slice(2, 10)}`)
          fs.mkdirSync(aside, { mode: 0o700 })
          try {
            writeRecord(path.join(aside, "attachment.json"), record)
            fs.renameSync(aside, paths.dir)
          } catch (e) {
            fs.rmSync(aside, { recursive: true, force: true })
            throw e
          }
          return
        }
        // opened without following a link, so what is checked and chmod-ed is the folder itself
        const fd = fs.openSync(paths.dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW)
        try {
          const st = fs.fstatSync(fd)
          const uid = process.getuid?.()
          if ((uid !== undefined && st.uid !== uid) || (st.mode & 0o022) !== 0) throw new Error(`${paths.dir} changed while it was checked`)
          if ((st.mode & 0o077) !== 0) fs.fchmodSync(fd, 0o700)
        } finally {
          fs.closeSync(fd)
        }
        writeRecord(paths.record, record)
      },
      catch: (e) => new MemberFailure({ message: `cannot prepare ${paths.dir}: ${(e as Error).message}` })
    })
  })

export const readPid = (file: string): number | undefined => {
  try {
    const n = Number(fs.readFileSync(file, "utf8").trim())
    return Number.isInteger(n) && n > 0 ? n : undefined
  } catch {
    return undefined
  }
}

export const processGone = (pid: number) => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")
  } catch {
    return true
  }
}

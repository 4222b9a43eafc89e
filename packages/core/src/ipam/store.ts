import { tryLock } from "#flock"
import { Duration, Effect, Result } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { IoFailure, ioFailure, StoreBusy, StoreCorrupt } from "../errors.ts"
import { type Address, code, type Family, formatAddress, parseAddress } from "../ip.ts"
import { applyChange as apply, type Change, emptyState, type Holder, type StoreState, type Transaction, type TransactOptions } from "./state.ts"

export type { TransactOptions } from "./state.ts"

/**
 * The IPAM store of one network: a directory holding `lock` (an flock(2) lock, released by the
 * kernel when its holder dies) and `allocations`, an append-only journal of checksummed lines:
 *
 *   containerscale-ipam 1
 *   + <ip> <containerId> <ifname> <rangeSetKey> <fnv1a>    an address handed out
 *   - <ip> <fnv1a>                                          an address released
 *   L <rangeSetKey> <ip> <fnv1a>                            last address handed out (after compaction)
 *
 * Every change appends whole lines in one write, so a process killed mid-write leaves at most a torn
 * last line, which the next lock holder cuts off: that change never returned success. Compaction
 * rewrites the journal into a temporary file and renames it over the old one. A line that is
 * damaged anywhere else is corruption: the store refuses to work rather than hand out a duplicate.
 *
 * The store's folder and files must be the plugin's own: every file is opened with O_NOFOLLOW (and
 * the compaction's temporary file with O_EXCL), and a folder or file that is a symbolic link, is
 * owned by another uid, or is writable by group or others is refused before anything is read or
 * written. A release that finds the journal damaged appends a line to `damaged` (see recordDamage).
 */

const HEADER = "containerscale-ipam 1\n"
const JOURNAL = "allocations"
const LOCK = "lock"
const COMPACT = `${JOURNAL}.compact`
/** The damage record of a store: one line per release that found its journal damaged. */
export const DAMAGE_FILE = "damaged"
/** The files of a store folder, which must all be the plugin's own. */
export const STORE_FILES: ReadonlyArray<string> = [LOCK, JOURNAL, COMPACT, DAMAGE_FILE]

const { O_APPEND, O_CREAT, O_DIRECTORY, O_EXCL, O_NOFOLLOW, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY } = fs.constants

const euid = (): number => process.geteuid?.() ?? 0

/** Why `st` (an lstat or fstat) must not be used as a store folder or file, for `owner`; undefined when it may. */
const unsafeReason = (st: fs.Stats, folder: boolean, owner: number): string | undefined => {
  if (st.isSymbolicLink()) return "is a symbolic link"
  if (folder ? !st.isDirectory() : !st.isFile()) return folder ? "is not a directory" : "is not a regular file"
  if (st.uid !== owner) return `is owned by uid ${st.uid}, not by the plugin's uid ${owner}`
  if ((st.mode & 0o022) !== 0) return `is writable by group or others (mode ${(st.mode & 0o777).toString(8).padStart(4, "0")})`
  return undefined
}

const unsafeStore = (file: string, reason: string) =>
  new IoFailure({
    message: `refusing the IPAM store: ${file} ${reason}. Nothing was read or changed. A store's folder and files must ` +
      `belong to the plugin's user (uid ${euid()}), not be writable by group or others, and not be symbolic links: ` +
      `find out who made it so, then make it a real folder of that user (chown, chmod go-w) or remove it.`
  })

/** Opens a file of a store without following a link; refuses it unless it is the plugin's own regular file. */
const openStoreFile = (file: string, flags: number, mode?: number): { readonly fd: number; readonly st: fs.Stats } => {
  let fd: number
  try {
    fd = fs.openSync(file, flags | O_NOFOLLOW, mode)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ELOOP") throw unsafeStore(file, "is a symbolic link")
    throw e
  }
  const st = fs.fstatSync(fd)
  const why = unsafeReason(st, false, euid())
  if (why !== undefined) {
    fs.closeSync(fd)
    throw unsafeStore(file, why)
  }
  return { fd, st }
}

/**
 * Checks the store folder `dir` (creating it when `create`) and the files in it that are not opened
 * on every call; throws what is unsafe. Returns false when the folder does not exist (and `create` is not set).
 */
const checkStoreFolder = (dir: string, create: boolean): boolean => {
  let st = fs.lstatSync(dir, { throwIfNoEntry: false })
  if (st === undefined) {
    if (!create) return false
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 })
    st = fs.lstatSync(dir)
  }
  const owner = euid()
  const why = unsafeReason(st, true, owner)
  if (why !== undefined) throw unsafeStore(dir, why)
  // opened later only with O_EXCL, so a link or another's file here would otherwise go unseen
  const compact = path.join(dir, COMPACT)
  const cst = fs.lstatSync(compact, { throwIfNoEntry: false })
  const cwhy = cst === undefined ? undefined : unsafeReason(cst, false, owner)
  if (cwhy !== undefined) throw unsafeStore(compact, cwhy)
  return true
}

/** The checksum that ends every journal line (FNV-1a, 32 bit, hex), for tools that write the format. */
export const journalChecksum = (text: string): string => {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return (h >>> 0).toString(16).padStart(8, "0")
}

const line = (text: string) => `${text} ${journalChecksum(text)}\n`

const addLine = (h: Holder) => line(`+ ${formatAddress(h.family, h.value)} ${h.containerId} ${h.ifname} ${h.setKey}`)

const V4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/

/** Journal addresses are canonical; IPv4 ones, the common case, skip the general parser. */
const parseIp = (text: string): Address | undefined => {
  const m = V4.exec(text)
  if (m !== null) {
    const o = [Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4])]
    if (o.every((x) => x <= 255)) return { family: 4, value: BigInt(o[0]! * 16777216 + o[1]! * 65536 + o[2]! * 256 + o[3]!) }
  }
  const parsed = parseAddress(text)
  return Result.isSuccess(parsed) ? parsed.success : undefined
}

/**
 * Applies the complete lines of `buf` to the state. Returns the bytes they span: a torn last line
 * (no newline) is left out. `lineNo` is the file line of the first one, for error messages.
 */
const replay = (state: StoreState, buf: Buffer, file: string, lineNo: number): number => {
  let offset = 0
  for (;; lineNo++) {
    const nl = buf.indexOf(10, offset)
    if (nl === -1) return offset
    const raw = buf.toString("utf8", offset, nl)
    const corrupt = (why: string) =>
      new StoreCorrupt({
        message: `the IPAM store ${file} is damaged at line ${lineNo} (${why}). ` +
          `No address was handed out. Stop the containers of this network and move the file aside to start ` +
          `an empty pool, or restore it from a backup.`,
        details: raw.slice(0, 200)
      })
    const sp = raw.lastIndexOf(" ")
    if (sp === -1 || journalChecksum(raw.slice(0, sp)) !== raw.slice(sp + 1)) throw corrupt("checksum mismatch")
    const fields = raw.slice(0, sp).split(" ")
    const ip = fields[1] === undefined ? undefined : parseIp(fields[0] === "L" ? fields[2] ?? "" : fields[1])
    if (fields[0] === "+" && fields.length === 5 && ip !== undefined) {
      apply(state, {
        op: "+",
        holder: { ...ip, containerId: fields[2]!, ifname: fields[3]!, setKey: fields[4]! }
      })
    } else if (fields[0] === "-" && fields.length === 2 && ip !== undefined) {
      apply(state, { op: "-", ...ip })
    } else if (fields[0] === "L" && fields.length === 3 && ip !== undefined) {
      state.last.set(fields[1]!, code(ip))
      state.lines++
    } else {
      throw corrupt("unknown record")
    }
    offset = nl + 1
  }
}

interface Cached {
  readonly ino: number
  readonly birth: number
  /** bytes of complete lines read so far */
  size: number
  /** lines of the file read so far, the header included */
  fileLines: number
  readonly state: StoreState
}

const countLines = (buf: Buffer, end: number) => {
  let n = 0
  for (let i = buf.indexOf(10); i !== -1 && i < end; i = buf.indexOf(10, i + 1)) n++
  return n
}

/** Per-process cache: a long-running user reads only what other processes appended since. */
const cache = new Map<string, Cached>()

const readFrom = (fd: number, start: number, end: number): Buffer => {
  const buf = Buffer.allocUnsafe(end - start)
  let got = 0
  while (got < buf.length) {
    const n = fs.readSync(fd, buf, got, buf.length - got, start + got)
    if (n === 0) break
    got += n
  }
  return buf.subarray(0, got)
}

/**
 * Replays a whole journal into `state`; returns the bytes of its complete lines (0 for a first write
 * that was cut short inside the header). Throws StoreCorrupt.
 */
const replayJournal = (state: StoreState, buf: Buffer, file: string): number => {
  if (buf.subarray(0, HEADER.length).toString("latin1") === HEADER) {
    return HEADER.length + replay(state, buf.subarray(HEADER.length), file, 2)
  }
  if (HEADER.startsWith(buf.toString("latin1"))) return 0 // a first write that was cut short
  throw new StoreCorrupt({
    message: `${file} is not a containerscale IPAM store (its first line is not "${HEADER.trim()}"). ` +
      `No address was handed out. Move the file aside if it does not belong here.`
  })
}

/** Brings the cached state of `dir` up to date with the journal; caller holds the lock. */
const refresh = (dir: string): Cached => {
  const file = path.join(dir, JOURNAL)
  let fd: number
  let st: fs.Stats
  try {
    ;({ fd, st } = openStoreFile(file, O_RDWR))
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      const fresh: Cached = { ino: 0, birth: 0, size: 0, fileLines: 0, state: emptyState() }
      cache.set(dir, fresh)
      return fresh
    }
    throw e
  }
  try {
    const cached = cache.get(dir)
    if (cached !== undefined && cached.ino === st.ino && cached.birth === st.birthtimeMs && cached.size <= st.size) {
      if (cached.size === st.size) return cached
      const tail = readFrom(fd, cached.size, st.size)
      const used = replay(cached.state, tail, file, cached.fileLines + 1)
      cached.size += used
      cached.fileLines += countLines(tail, used)
      if (cached.size < st.size) fs.ftruncateSync(fd, cached.size)
      return cached
    }
    const buf = readFrom(fd, 0, st.size)
    const state = emptyState()
    const size = replayJournal(state, buf, file)
    if (size < st.size) fs.ftruncateSync(fd, size)
    const fresh: Cached = {
      ino: size === 0 ? 0 : st.ino,
      birth: size === 0 ? 0 : st.birthtimeMs,
      size,
      fileLines: countLines(buf, size),
      state
    }
    cache.set(dir, fresh)
    return fresh
  } finally {
    fs.closeSync(fd)
  }
}

const append = (dir: string, cached: Cached, changes: ReadonlyArray<Change>) => {
  const file = path.join(dir, JOURNAL)
  let text = cached.size === 0 ? HEADER : ""
  for (const c of changes) text += c.op === "+" ? addLine(c.holder) : line(`- ${formatAddress(c.family, c.value)}`)
  const bytes = Buffer.from(text, "utf8")
  // a journal read before is appended to, never created again: that would lose its header
  const { fd, st } = openStoreFile(file, cached.size === 0 ? O_WRONLY | O_CREAT | O_TRUNC : O_WRONLY | O_APPEND, 0o600)
  try {
    if (fs.writeSync(fd, bytes) !== bytes.length) throw new Error("short write")
    fs.fdatasyncSync(fd)
    if (cached.size === 0) {
      cached = { ino: st.ino, birth: st.birthtimeMs, size: 0, fileLines: 0, state: cached.state }
      cache.set(dir, cached)
    }
  } finally {
    fs.closeSync(fd)
  }
  for (const c of changes) apply(cached.state, c)
  cached.size += bytes.length
  cached.fileLines += countLines(bytes, bytes.length)
  // Every plugin process replays the whole journal, so dead lines are dropped early.
  if (cached.state.lines > 2 * (cached.state.byCode.size + cached.state.last.size) + 64) {
    try {
      compact(dir, cached)
    } catch {
      // The change is written; a journal that could not be compacted is only longer.
      fs.rmSync(path.join(dir, COMPACT), { force: true })
    }
  }
}

/** Rewrites the journal as its live entries; `L` lines come last so they fix each set's position. */
const compact = (dir: string, cached: Cached) => {
  const file = path.join(dir, JOURNAL)
  const tmp = path.join(dir, COMPACT)
  const { state } = cached
  let text = HEADER
  for (const h of state.byCode.values()) text += addLine(h)
  for (const [key, c] of state.last) {
    const family: Family = c >> 128n === 1n ? 6 : 4
    text += line(`L ${key} ${formatAddress(family, family === 6 ? c ^ (1n << 128n) : c)}`)
  }
  const bytes = Buffer.from(text, "utf8")
  const create = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW
  let fd: number
  try {
    fd = fs.openSync(tmp, create, 0o600)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e
    // left by a compaction that crashed (checkStoreFolder saw it is the plugin's own file); unlink never follows
    fs.unlinkSync(tmp)
    fd = fs.openSync(tmp, create, 0o600)
  }
  let st: fs.Stats
  try {
    if (fs.writeSync(fd, bytes) !== bytes.length) throw new Error("short write")
    fs.fsyncSync(fd)
    st = fs.fstatSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(tmp, file)
  const dirFd = fs.openSync(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
  try {
    fs.fsyncSync(dirFd)
  } finally {
    fs.closeSync(dirFd)
  }
  state.lines = state.last.size + state.byCode.size
  cache.set(dir, { ino: st.ino, birth: st.birthtimeMs, size: bytes.length, fileLines: countLines(bytes, bytes.length), state })
}

const EWOULDBLOCK = 11

const acquire = (dir: string, timeout: Duration.Duration) =>
  Effect.gen(function*() {
    const lockFile = path.join(dir, LOCK)
    const fd = yield* Effect.try({
      try: () => openStoreFile(lockFile, O_RDWR | O_CREAT, 0o600).fd,
      catch: (e) => (e instanceof IoFailure ? e : ioFailure("open the IPAM lock", lockFile)(e))
    })
    const deadline = Date.now() + Duration.toMillis(timeout)
    let cap = 2
    for (;;) {
      const rc = tryLock(fd)
      if (rc === 0) return fd
      if (rc !== EWOULDBLOCK || Date.now() >= deadline) {
        fs.closeSync(fd)
        return yield* rc === EWOULDBLOCK
          ? new StoreBusy({
            message: `another process has held the IPAM lock ${lockFile} for ${Duration.format(timeout)}; ` +
              `try again, and look for a hung process with: fuser -v ${lockFile}`
          })
          : new IoFailure({ message: `cannot lock ${lockFile}: flock failed with errno ${rc}` })
      }
      // Full jitter keeps many waiting plugin processes from waking up together.
      yield* Effect.sleep(Duration.millis(1 + Math.random() * cap))
      cap = Math.min(cap * 2, 32)
    }
  })

/**
 * Runs `f` on the current state of the store in `dir` under its lock and appends the changes it
 * returns. `f` must not change the state itself.
 */
export const transact = <A, E>(
  dir: string,
  options: TransactOptions,
  f: Transaction<A, E>
): Effect.Effect<A, E | StoreBusy | StoreCorrupt | IoFailure> =>
  Effect.flatMap(
    Effect.try({
      try: () => checkStoreFolder(dir, options.create),
      catch: (e) => (e instanceof IoFailure ? e : ioFailure("open the IPAM store", dir)(e))
    }),
    (exists) =>
      !exists
        ? Effect.suspend(() => Result.match(f(emptyState()), { onSuccess: (o) => Effect.succeed(o.value), onFailure: Effect.fail }))
        : Effect.acquireUseRelease(
          acquire(dir, options.lockTimeout),
          () =>
            Effect.gen(function*() {
              const cached = yield* Effect.try({
                try: () => refresh(dir),
                catch: (e) => {
                  cache.delete(dir)
                  return e instanceof StoreCorrupt || e instanceof IoFailure ? e : ioFailure("read the IPAM store", path.join(dir, JOURNAL))(e)
                }
              })
              const outcome = f(cached.state)
              if (Result.isFailure(outcome)) return yield* Effect.fail(outcome.failure)
              const { value, changes } = outcome.success
              if (changes.length > 0) {
                yield* Effect.try({
                  try: () => append(dir, cached, changes),
                  catch: (e) => {
                    cache.delete(dir)
                    return e instanceof IoFailure ? e : ioFailure("write the IPAM store", path.join(dir, JOURNAL))(e)
                  }
                })
              }
              return value
            }),
          (fd) => Effect.sync(() => fs.closeSync(fd))
        )
  )

/**
 * Notes in `<dir>/damaged` that a release found the journal of the store in `dir` damaged and freed
 * nothing (one line, `<ISO time> <note>`), for `containerscalectl doctor`. Best effort: never throws,
 * and stops growing at 64 KiB.
 */
export const recordDamage = (dir: string, note: string): void => {
  let fd = -1
  try {
    ;({ fd } = openStoreFile(path.join(dir, DAMAGE_FILE), O_WRONLY | O_APPEND | O_CREAT, 0o600))
    if (fs.fstatSync(fd).size < 64 * 1024) fs.writeSync(fd, `${new Date().toISOString()} ${note.replace(/[\r\n]+/g, " ")}\n`)
  } catch {
    // the release succeeds anyway; the journal itself still shows the damage
  } finally {
    if (fd >= 0) fs.closeSync(fd)
  }
}

export interface StoreInspection {
  /** the store folder */
  readonly dir: string
  /** why the plugins refuse the store (a symbolic link, another owner, writable by others); empty when they do not */
  readonly unsafe: ReadonlyArray<string>
  /** why its journal cannot be read (the message the plugins fail with, code 101), when it cannot */
  readonly corrupt?: string | undefined
  /** the lines of its damage record: releases that freed nothing because the journal was damaged */
  readonly damage: ReadonlyArray<string>
}

/**
 * Why the plugins would refuse the store folder `dir` and its files (a symbolic link, another
 * owner than `owner`, writable by group or others); empty when they would not or it does not exist.
 */
export const unsafeStoreReasons = (dir: string, owner: number = euid()): Array<string> => {
  const st = fs.lstatSync(dir, { throwIfNoEntry: false })
  if (st === undefined) return []
  const why = unsafeReason(st, true, owner)
  if (why !== undefined) return [`${dir} ${why}`]
  const reasons: Array<string> = []
  for (const name of STORE_FILES) {
    const file = path.join(dir, name)
    const fst = fs.lstatSync(file, { throwIfNoEntry: false })
    const fwhy = fst === undefined ? undefined : unsafeReason(fst, false, owner)
    if (fwhy !== undefined) reasons.push(`${file} ${fwhy}`)
  }
  return reasons
}

/**
 * Looks at a store folder as the plugins would, without locking or changing it: whether they would
 * refuse it, whether its journal reads, and what its damage record says. For `doctor`; `owner` is
 * the uid the plugins run as (default: this process's).
 */
export const inspectStore = (dir: string, owner: number = euid()): StoreInspection => {
  const unsafe = unsafeStoreReasons(dir, owner)
  if (unsafe.length > 0) return { dir, unsafe, damage: [] }
  const read = (name: string): Buffer | undefined => {
    let fd: number
    try {
      fd = fs.openSync(path.join(dir, name), O_RDONLY | O_NOFOLLOW)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined
      throw e
    }
    try {
      return readFrom(fd, 0, fs.fstatSync(fd).size)
    } finally {
      fs.closeSync(fd)
    }
  }
  let corrupt: string | undefined
  const journal = read(JOURNAL)
  if (journal !== undefined) {
    try {
      replayJournal(emptyState(), journal, path.join(dir, JOURNAL))
    } catch (e) {
      corrupt = e instanceof StoreCorrupt ? e.message : String(e)
    }
  }
  const record = read(DAMAGE_FILE)
  const damage = record === undefined ? [] : record.toString("utf8").split("\n").filter((l) => l !== "")
  return { dir, unsafe, corrupt, damage }
}

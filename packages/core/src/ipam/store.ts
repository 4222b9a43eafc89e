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
 */

const HEADER = "containerscale-ipam 1\n"
const JOURNAL = "allocations"
const LOCK = "lock"

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

/** Brings the cached state of `dir` up to date with the journal; caller holds the lock. */
const refresh = (dir: string): Cached => {
  const file = path.join(dir, JOURNAL)
  let fd: number
  try {
    fd = fs.openSync(file, fs.constants.O_RDWR)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      const fresh: Cached = { ino: 0, birth: 0, size: 0, fileLines: 0, state: emptyState() }
      cache.set(dir, fresh)
      return fresh
    }
    throw e
  }
  try {
    const st = fs.fstatSync(fd)
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
    let size: number
    if (buf.subarray(0, HEADER.length).toString("latin1") === HEADER) {
      size = HEADER.length + replay(state, buf.subarray(HEADER.length), file, 2)
    } else if (HEADER.startsWith(buf.toString("latin1"))) {
      size = 0 // a first write that was cut short
    } else {
      throw new StoreCorrupt({
        message: `${file} is not a containerscale IPAM store (its first line is not "${HEADER.trim()}"). ` +
          `No address was handed out. Move the file aside if it does not belong here.`
      })
    }
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
  const fd = fs.openSync(file, cached.size === 0 ? "w" : "a", 0o600)
  try {
    if (fs.writeSync(fd, bytes) !== bytes.length) throw new Error("short write")
    fs.fdatasyncSync(fd)
    if (cached.size === 0) {
      const st = fs.fstatSync(fd)
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
      fs.rmSync(path.join(dir, `${JOURNAL}.compact`), { force: true })
    }
  }
}

/** Rewrites the journal as its live entries; `L` lines come last so they fix each set's position. */
const compact = (dir: string, cached: Cached) => {
  const file = path.join(dir, JOURNAL)
  const tmp = `${file}.compact`
  const { state } = cached
  let text = HEADER
  for (const h of state.byCode.values()) text += addLine(h)
  for (const [key, c] of state.last) {
    const family: Family = c >> 128n === 1n ? 6 : 4
    text += line(`L ${key} ${formatAddress(family, family === 6 ? c ^ (1n << 128n) : c)}`)
  }
  const bytes = Buffer.from(text, "utf8")
  const fd = fs.openSync(tmp, "w", 0o600)
  try {
    fs.writeSync(fd, bytes)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(tmp, file)
  const dirFd = fs.openSync(dir, "r")
  try {
    fs.fsyncSync(dirFd)
  } finally {
    fs.closeSync(dirFd)
  }
  const st = fs.statSync(file)
  state.lines = state.last.size + state.byCode.size
  cache.set(dir, { ino: st.ino, birth: st.birthtimeMs, size: bytes.length, fileLines: countLines(bytes, bytes.length), state })
}

const EWOULDBLOCK = 11

const acquire = (dir: string, timeout: Duration.Duration) =>
  Effect.gen(function*() {
    const lockFile = path.join(dir, LOCK)
    const fd = yield* Effect.try({
      try: () => {
        fs.mkdirSync(dir, { recursive: true, mode: 0o755 })
        return fs.openSync(lockFile, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600)
      },
      catch: ioFailure("open the IPAM lock", lockFile)
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
  !options.create && !fs.existsSync(dir)
    ? Effect.suspend(() => Result.match(f(emptyState()), { onSuccess: (o) => Effect.succeed(o.value), onFailure: Effect.fail }))
    : Effect.acquireUseRelease(
    acquire(dir, options.lockTimeout),
    () =>
      Effect.gen(function*() {
        const cached = yield* Effect.try({
          try: () => refresh(dir),
          catch: (e) => {
            cache.delete(dir)
            return e instanceof StoreCorrupt ? e : ioFailure("read the IPAM store", path.join(dir, JOURNAL))(e)
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
              return ioFailure("write the IPAM store", path.join(dir, JOURNAL))(e)
            }
          })
        }
        return value
      }),
    (fd) => Effect.sync(() => fs.closeSync(fd))
  )

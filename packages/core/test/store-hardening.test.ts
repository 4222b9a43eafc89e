import { checkDataDir, DAMAGE_FILE, inspectStore, Ipam, type PoolConfig, resolvePool } from "@containerscale/core"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

/**
 * The IPAM store refuses what it must not follow or trust: a store folder or file that is a
 * symbolic link, belongs to another uid, or is writable by group or others (nothing is read,
 * created or written then); a relative data directory; and a damaged journal does not block a
 * release (it frees nothing and notes the damage). Runs as root (chown to 65534).
 */

let root: string
beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "cs-store-hardening-"))
})
afterAll(() => {
  fs.rmSync(root, { recursive: true, force: true })
})

let counter = 0
/** A data directory of its own for each test, world-writable as an attacker would like it. */
const freshDataDir = () => {
  const dir = path.join(root, `d${++counter}`)
  fs.mkdirSync(dir)
  fs.chmodSync(dir, 0o777)
  return dir
}

/** A file only root may read or write: what an attack through a link would overwrite or create. */
const secretFile = () => {
  const file = path.join(root, `secret${++counter}`)
  fs.writeFileSync(file, "root's secret\n", { mode: 0o600 })
  return file
}

/** Every file and link under dir with its bytes (links as their target). */
const snapshot = (dir: string): Record<string, string> => {
  const out: Record<string, string> = {}
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name)
      if (e.isSymbolicLink()) out[path.relative(dir, p)] = `-> ${fs.readlinkSync(p)}`
      else if (e.isDirectory()) walk(p)
      else out[path.relative(dir, p)] = fs.readFileSync(p).toString("base64")
    }
  }
  walk(dir)
  return out
}

const POOL_CONFIG: PoolConfig = { subnet: "10.31.0.0/24" }
const POOL = Result.getOrThrow(resolvePool(POOL_CONFIG))

type Failure = { _tag: string; cniCode: number; message: string }
const failureOf = (effect: Effect.Effect<unknown, unknown>) => Effect.flip(effect as Effect.Effect<unknown, Failure>)

/** Allocate/release cycles: enough dead lines to make the journal compact itself. */
const cycle = (ipam: Ipam["Service"], n: number) =>
  Effect.gen(function*() {
    for (let i = 0; i < n; i++) {
      yield* ipam.allocate({ network: "n", pool: POOL, containerId: "c", ifname: "eth0" })
      yield* ipam.release({ network: "n", containerId: "c", ifname: "eth0" })
    }
  })

/** A store of network "n" with 66 dead lines, copied into a fresh data directory: its next allocate and release compact it. */
const storeAboutToCompact = () =>
  Effect.gen(function*() {
    const scratch = freshDataDir()
    yield* cycle(Ipam.make({ dataDir: scratch }), 33)
    const dataDir = freshDataDir()
    fs.cpSync(path.join(scratch, "n"), path.join(dataDir, "n"), { recursive: true })
    return dataDir
  })

describe("links in a store are refused, and nothing is followed", () => {
  it.live("a link at allocations.compact: compaction would overwrite its target; the store refuses instead", () =>
    Effect.gen(function*() {
      const dataDir = yield* storeAboutToCompact()
      const secret = secretFile()
      const link = path.join(dataDir, "n", "allocations.compact")
      fs.symlinkSync(secret, link)
      const before = snapshot(dataDir)
      const ipam = Ipam.make({ dataDir })
      const failures: Array<Failure> = []
      for (let i = 0; i < 3; i++) {
        const a = yield* Effect.result(ipam.allocate({ network: "n", pool: POOL, containerId: "c", ifname: "eth0" }))
        if (Result.isFailure(a)) failures.push(a.failure as Failure)
        const r = yield* Effect.result(ipam.release({ network: "n", containerId: "c", ifname: "eth0" }))
        if (Result.isFailure(r)) failures.push(r.failure as Failure)
      }
      assert.strictEqual(fs.readFileSync(secret, "utf8"), "root's secret\n", "the link's target was overwritten")
      assert.strictEqual(fs.statSync(secret).mode & 0o777, 0o600)
      assert.isTrue(fs.lstatSync(link).isSymbolicLink())
      assert.deepStrictEqual(snapshot(dataDir), before, "the store changed")
      assert.strictEqual(failures.length, 6, "every operation is refused")
      for (const f of failures) {
        assert.strictEqual(f._tag, "IoFailure")
        assert.strictEqual(f.cniCode, 5)
        assert.include(f.message, `${link} is a symbolic link`)
        assert.include(f.message, "Nothing was read or changed")
      }
    }))

  it.live("a link at lock (to a file, or dangling) is refused: neither opened nor created", () =>
    Effect.gen(function*() {
      for (const dangling of [false, true]) {
        const dataDir = freshDataDir()
        fs.mkdirSync(path.join(dataDir, "n"))
        const target = dangling ? path.join(root, `nothing${++counter}`) : secretFile()
        const lock = path.join(dataDir, "n", "lock")
        fs.symlinkSync(target, lock)
        const before = snapshot(dataDir)
        const ipam = Ipam.make({ dataDir })
        for (const attempt of [
          ipam.allocate({ network: "n", pool: POOL, containerId: "c", ifname: "eth0" }),
          ipam.release({ network: "n", containerId: "c", ifname: "eth0" }),
          ipam.usage({ network: "n", pool: POOL })
        ]) {
          const e = yield* failureOf(attempt)
          assert.strictEqual(e.cniCode, 5)
          assert.include(e.message, `${lock} is a symbolic link`)
        }
        assert.deepStrictEqual(snapshot(dataDir), before)
        if (dangling) assert.isFalse(fs.existsSync(target), "the dangling link's target was created")
        else assert.strictEqual(fs.readFileSync(target, "utf8"), "root's secret\n")
      }
    }))

  it.live("a link at allocations, or a store folder that is a link, is refused", () =>
    Effect.gen(function*() {
      // a real store elsewhere, reached through a link: its journal, then the whole folder
      const real = freshDataDir()
      yield* Ipam.make({ dataDir: real }).allocate({ network: "n", pool: POOL, containerId: "a", ifname: "eth0" })
      const realBefore = snapshot(real)

      const viaJournal = freshDataDir()
      fs.mkdirSync(path.join(viaJournal, "n"))
      fs.symlinkSync(path.join(real, "n", "allocations"), path.join(viaJournal, "n", "allocations"))
      const e1 = yield* failureOf(Ipam.make({ dataDir: viaJournal }).allocate({ network: "n", pool: POOL, containerId: "b", ifname: "eth0" }))
      assert.strictEqual(e1.cniCode, 5)
      assert.include(e1.message, `${path.join(viaJournal, "n", "allocations")} is a symbolic link`)

      const viaFolder = freshDataDir()
      fs.symlinkSync(path.join(real, "n"), path.join(viaFolder, "n"))
      const ipam = Ipam.make({ dataDir: viaFolder })
      for (const attempt of [
        ipam.allocate({ network: "n", pool: POOL, containerId: "b", ifname: "eth0" }),
        ipam.release({ network: "n", containerId: "a", ifname: "eth0" }),
        ipam.gc({ network: "n", valid: [] })
      ]) {
        const e = yield* failureOf(attempt)
        assert.strictEqual(e.cniCode, 5)
        assert.include(e.message, `${path.join(viaFolder, "n")} is a symbolic link`)
      }
      assert.deepStrictEqual(snapshot(real), realBefore, "the store behind the links changed")
    }))

  it.live("compaction still works, and replaces a temporary file a crashed compaction left", () =>
    Effect.gen(function*() {
      const dataDir = yield* storeAboutToCompact()
      const tmp = path.join(dataDir, "n", "allocations.compact")
      fs.writeFileSync(tmp, "half a journal", { mode: 0o600 })
      const ipam = Ipam.make({ dataDir })
      yield* cycle(ipam, 1)
      assert.isFalse(fs.existsSync(tmp))
      const journal = fs.readFileSync(path.join(dataDir, "n", "allocations"), "utf8").split("\n").filter((l) => l !== "")
      assert.strictEqual(journal.length, 2, `compacted to the header and one L line: ${journal.join(" | ")}`)
      const a = yield* ipam.allocate({ network: "n", pool: POOL, containerId: "d", ifname: "eth0" })
      assert.strictEqual(a[0]!.ip, "10.31.0.36", "the sequential position (after 34 cycles from .2) survived")
    }))
})

describe("a store of another uid, or writable by others, is refused", () => {
  it.live("a store folder owned by uid 65534: every operation fails, nothing changes", () =>
    Effect.gen(function*() {
      const dataDir = freshDataDir()
      const ipam = Ipam.make({ dataDir })
      yield* ipam.allocate({ network: "n", pool: POOL, containerId: "a", ifname: "eth0" })
      fs.chownSync(path.join(dataDir, "n"), 65534, 65534)
      const before = snapshot(dataDir)
      for (const attempt of [
        ipam.allocate({ network: "n", pool: POOL, containerId: "b", ifname: "eth0" }),
        ipam.release({ network: "n", containerId: "a", ifname: "eth0" }),
        ipam.leases({ network: "n", pool: POOL, containerId: "a", ifname: "eth0" }),
        ipam.usage({ network: "n", pool: POOL })
      ]) {
        const e = yield* failureOf(attempt)
        assert.strictEqual(e.cniCode, 5)
        assert.include(e.message, `${path.join(dataDir, "n")} is owned by uid 65534, not by the plugin's uid 0`)
      }
      assert.deepStrictEqual(snapshot(dataDir), before)
      // STATUS names it, for this network and when it looks at the whole data directory
      for (const network of ["n", undefined]) {
        const s = yield* failureOf(checkDataDir(dataDir, network))
        assert.strictEqual(s._tag, "NotAvailable")
        assert.include(s.message, `${path.join(dataDir, "n")} is owned by uid 65534`)
      }
      yield* checkDataDir(dataDir, "other")
    }))

  it.live("a journal of another uid, a lock writable by others, a store folder writable by others", () =>
    Effect.gen(function*() {
      const cases: Array<[string, (dir: string) => void, string]> = [
        ["allocations", (d) => fs.chownSync(path.join(d, "allocations"), 65534, 65534), "allocations is owned by uid 65534"],
        ["lock", (d) => fs.chmodSync(path.join(d, "lock"), 0o666), "lock is writable by group or others (mode 0666)"],
        ["folder", (d) => fs.chmodSync(d, 0o777), "n is writable by group or others (mode 0777)"]
      ]
      for (const [what, spoil, expected] of cases) {
        const dataDir = freshDataDir()
        const ipam = Ipam.make({ dataDir })
        yield* ipam.allocate({ network: "n", pool: POOL, containerId: "a", ifname: "eth0" })
        spoil(path.join(dataDir, "n"))
        const before = snapshot(dataDir)
        const e = yield* failureOf(Ipam.make({ dataDir }).allocate({ network: "n", pool: POOL, containerId: "b", ifname: "eth0" }))
        assert.strictEqual(e.cniCode, 5, what)
        assert.include(e.message, expected, what)
        assert.deepStrictEqual(snapshot(dataDir), before, what)
        assert.deepStrictEqual(inspectStore(path.join(dataDir, "n")).unsafe.length, 1, what)
      }
    }))
})

describe("the data directory must be absolute", () => {
  it.live("a relative or empty dataDir fails with code 7 (in a request, or as the Ipam's default) and creates nothing", () =>
    Effect.gen(function*() {
      const target = freshDataDir()
      // relative to this process's working directory, it points into the temp dir
      const relative = path.relative(process.cwd(), target)
      assert.isFalse(path.isAbsolute(relative))
      const attempts = [
        Ipam.make({ dataDir: "/nonexistent" }).allocate({ network: "n", dataDir: relative, pool: POOL, containerId: "a", ifname: "eth0" }),
        Ipam.make({ dataDir: "/nonexistent" }).allocate({ network: "n", dataDir: "", pool: POOL, containerId: "a", ifname: "eth0" }),
        Ipam.make({ dataDir: relative }).allocate({ network: "n", pool: POOL, containerId: "a", ifname: "eth0" }),
        Ipam.make({ dataDir: "/nonexistent" }).release({ network: "n", dataDir: relative, containerId: "a", ifname: "eth0" }),
        Ipam.make({ dataDir: "/nonexistent" }).gc({ network: "n", dataDir: "", valid: [] }),
        checkDataDir(relative),
        checkDataDir("")
      ]
      for (const attempt of attempts) {
        const e = yield* failureOf(attempt)
        assert.strictEqual(e._tag, "InvalidNetworkConfig")
        assert.strictEqual(e.cniCode, 7)
        assert.include(e.message, "is not an absolute path")
        assert.include(e.message, `"dataDir": "/var/lib/containerscale/ipam"`)
      }
      assert.deepStrictEqual(fs.readdirSync(target), [])
      assert.isFalse(fs.existsSync("/nonexistent"))
    }))
})

describe("a damaged journal does not block a release", () => {
  it.live("release frees nothing, keeps the journal and notes it; allocate still fails with 101; inspectStore reports both", () =>
    Effect.gen(function*() {
      const scratch = freshDataDir()
      const ipam = Ipam.make({ dataDir: scratch })
      for (const id of ["a", "b"]) yield* ipam.allocate({ network: "n", pool: POOL, containerId: id, ifname: "eth0" })
      // a copy this process never opened: it reads the journal from scratch, as a plugin process does
      const dataDir = freshDataDir()
      const dir = path.join(dataDir, "n")
      fs.cpSync(path.join(scratch, "n"), dir, { recursive: true })
      assert.deepStrictEqual(inspectStore(dir), { dir, unsafe: [], corrupt: undefined, damage: [] })
      const file = path.join(dir, "allocations")
      const lines = fs.readFileSync(file, "latin1").split("\n")
      lines[1] = lines[1]!.replace("10.31.0.2", "10.31.0.9")
      fs.writeFileSync(file, lines.join("\n"), "latin1")
      const journal = fs.readFileSync(file)

      const fresh = Ipam.make({ dataDir })
      assert.deepStrictEqual(yield* fresh.release({ network: "n", containerId: "a", ifname: "eth0" }), [])
      const e = yield* failureOf(fresh.allocate({ network: "n", pool: POOL, containerId: "c", ifname: "eth0" }))
      assert.strictEqual(e.cniCode, 101)
      assert.isTrue(fs.readFileSync(file).equals(journal), "the damaged journal was changed")

      const seen = inspectStore(dir)
      assert.deepStrictEqual(seen.unsafe, [])
      assert.include(seen.corrupt, `${file} is damaged at line 2`)
      assert.strictEqual(seen.damage.length, 1)
      assert.match(seen.damage[0]!, /^\d{4}-\d\d-\d\dT\S+ release of a \(eth0\) freed nothing: the IPAM store \S+ is damaged at line 2 \(checksum mismatch\)$/)
      assert.strictEqual(fs.statSync(path.join(dir, DAMAGE_FILE)).mode & 0o777, 0o600)
    }))
})

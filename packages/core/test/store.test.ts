import { Ipam, type PoolConfig, resolvePool } from "@containerscale/core"
import { journalChecksum } from "@containerscale/core/internal"
import type { Op } from "./fixtures/ipam-child.ts"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

/**
 * The on-disk journal: what another process sees, compaction, a torn last line, and damage that
 * must stop the store without changing a byte.
 *
 * This process keeps a per-directory cache of the journal, so "a fresh view" here means either a
 * child process (fixtures/ipam-child.ts) or a copy of the store under a path this process has never
 * opened.
 */

const FIXTURE = fileURLToPath(new URL("./fixtures/ipam-child.ts", import.meta.url))
const JOURNAL = "allocations"

let root: string
beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "cs-store-"))
})
afterAll(() => {
  fs.rmSync(root, { recursive: true, force: true })
})

let counter = 0
/** A data directory of its own for each test. */
const freshDataDir = () => {
  const dir = path.join(root, `d${++counter}`)
  fs.mkdirSync(dir)
  return dir
}

const POOL_CONFIG: PoolConfig = { ranges: [[{ subnet: "10.20.0.0/24" }], [{ subnet: "fd00:20::/120" }]] }
const POOL = Result.getOrThrow(resolvePool(POOL_CONFIG))
const V4_POOL_CONFIG: PoolConfig = { subnet: "10.21.0.0/24" }
const V4_POOL = Result.getOrThrow(resolvePool(V4_POOL_CONFIG))

type ChildLine = { ok: any } | { err: { tag: string; code: number; message: string } }

/** Runs operations in a separate Node process (a fresh view of the store, as a second plugin would have). */
const child = (dataDir: string, network: string, pool: PoolConfig, ops: ReadonlyArray<Op>): Array<ChildLine> => {
  const out = execFileSync(process.execPath, ["--conditions=source", FIXTURE, JSON.stringify({ dataDir, network, pool, ops })], {
    encoding: "utf8",
    timeout: 30_000,
    env: { ...process.env, NODE_COMPILE_CACHE: path.join(root, "node-compile-cache") }
  })
  return out.trim().split("\n").map((l) => JSON.parse(l) as ChildLine)
}

const okOf = (line: ChildLine | undefined) => {
  assert.isDefined(line)
  if ("err" in line!) assert.fail(`child operation failed: ${line.err.message}`)
  return (line as { ok: any }).ok
}

/** Every file under dir with its bytes. */
const snapshot = (dir: string): Record<string, string> => {
  const out: Record<string, string> = {}
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name)
      if (e.isDirectory()) walk(p)
      else out[path.relative(dir, p)] = fs.readFileSync(p).toString("base64")
    }
  }
  walk(dir)
  return out
}


const allocationsOf = (usage: ReadonlyArray<{ allocations: ReadonlyArray<{ containerId: string; ifname: string; ip: string }> }>) =>
  usage.flatMap((u) => u.allocations.map((a) => `${a.containerId}/${a.ifname} ${a.ip}`)).sort()

const copyStore = (fromDataDir: string, network: string, toNetwork: string) =>
  fs.cpSync(path.join(fromDataDir, network), path.join(fromDataDir, toNetwork), { recursive: true })

describe("the journal is shared between processes", () => {
  it.live("a second Ipam, a copy read from scratch and a child process all see the same allocations", () =>
    Effect.gen(function*() {
      const dataDir = freshDataDir()
      const ipam = Ipam.make({ dataDir })
      for (const id of ["a", "b", "c", "d"]) yield* ipam.allocate({ network: "n", pool: POOL, containerId: id, ifname: "eth0" })
      yield* ipam.release({ network: "n", containerId: "b", ifname: "eth0" })
      const expected = allocationsOf(yield* ipam.usage({ network: "n", pool: POOL }))
      assert.deepStrictEqual(expected, [
        "a/eth0 10.20.0.2",
        "a/eth0 fd00:20::2",
        "c/eth0 10.20.0.4",
        "c/eth0 fd00:20::4",
        "d/eth0 10.20.0.5",
        "d/eth0 fd00:20::5"
      ])

      assert.deepStrictEqual(allocationsOf(yield* Ipam.make({ dataDir }).usage({ network: "n", pool: POOL })), expected)
      copyStore(dataDir, "n", "copy")
      assert.deepStrictEqual(allocationsOf(yield* Ipam.make({ dataDir }).usage({ network: "copy", pool: POOL })), expected)
      const [usage] = child(dataDir, "n", POOL_CONFIG, [{ op: "usage" }])
      assert.deepStrictEqual(allocationsOf(okOf(usage)), expected)
    }))

  it.live("what a child process allocates and releases, this process sees (and never hands out twice)", () =>
    Effect.gen(function*() {
      const dataDir = freshDataDir()
      const ipam = Ipam.make({ dataDir })
      const mine = yield* ipam.allocate({ network: "n", pool: POOL, containerId: "parent1", ifname: "eth0" })
      assert.deepStrictEqual(mine.map((l) => l.ip), ["10.20.0.2", "fd00:20::2"])
      const lines = child(dataDir, "n", POOL_CONFIG, [
        { op: "allocate", containerId: "kid1", ifname: "eth0" },
        { op: "allocate", containerId: "kid2", ifname: "eth0" },
        { op: "allocate", containerId: "kid3", ifname: "eth0", requested: ["10.20.0.100"] },
        { op: "release", containerId: "kid2", ifname: "eth0" },
        { op: "allocate", containerId: "parent1", ifname: "eth0" }
      ])
      assert.deepStrictEqual(okOf(lines[0]).map((l: { ip: string }) => l.ip), ["10.20.0.3", "fd00:20::3"])
      assert.deepStrictEqual(okOf(lines[1]).map((l: { ip: string }) => l.ip), ["10.20.0.4", "fd00:20::4"])
      assert.deepStrictEqual(okOf(lines[2]).map((l: { ip: string }) => l.ip), ["10.20.0.100", "fd00:20::5"])
      assert.deepStrictEqual(okOf(lines[4]).map((l: { ip: string }) => l.ip), ["10.20.0.2", "fd00:20::2"]) // idempotent across processes
      // this process's cache must take in what the child appended
      const next = yield* ipam.allocate({ network: "n", pool: POOL, containerId: "parent2", ifname: "eth0" })
      assert.deepStrictEqual(next.map((l) => l.ip), ["10.20.0.101", "fd00:20::6"]) // sequential: after the child's last
      const inUse = yield* Effect.flip(ipam.allocate({ network: "n", pool: POOL, containerId: "parent3", ifname: "eth0", requested: ["10.20.0.3"] }))
      assert.strictEqual(inUse.cniCode, 103)
      assert.deepStrictEqual(allocationsOf(yield* ipam.usage({ network: "n", pool: POOL })), [
        "kid1/eth0 10.20.0.3",
        "kid1/eth0 fd00:20::3",
        "kid3/eth0 10.20.0.100",
        "kid3/eth0 fd00:20::5",
        "parent1/eth0 10.20.0.2",
        "parent1/eth0 fd00:20::2",
        "parent2/eth0 10.20.0.101",
        "parent2/eth0 fd00:20::6"
      ])
    }))

  it.live("the journal's format: a header line, then one checksummed line per change", () =>
    Effect.gen(function*() {
      const dataDir = freshDataDir()
      const ipam = Ipam.make({ dataDir })
      yield* ipam.allocate({ network: "n", pool: V4_POOL, containerId: "a", ifname: "eth0" })
      yield* ipam.release({ network: "n", containerId: "a", ifname: "eth0" })
      const text = fs.readFileSync(path.join(dataDir, "n", JOURNAL), "utf8")
      const lines = text.split("\n")
      assert.strictEqual(lines.pop(), "") // ends with a newline
      assert.strictEqual(lines[0], "containerscale-ipam 1")
      assert.deepStrictEqual(lines.slice(1).map((l) => l.slice(0, l.lastIndexOf(" "))), [
        "+ 10.21.0.2 a eth0 10.21.0.1-10.21.0.254",
        "- 10.21.0.2"
      ])
      for (const l of lines.slice(1)) assert.strictEqual(l.slice(l.lastIndexOf(" ") + 1), journalChecksum(l.slice(0, l.lastIndexOf(" "))))
      assert.isTrue(fs.existsSync(path.join(dataDir, "n", "lock")))
    }))

  it.live("an interface name outside ASCII (valid for Linux and CNI) survives the journal", () =>
    Effect.gen(function*() {
      // CNI and the kernel accept any bytes in an ifname except "/", ":" and white space (max 15 bytes)
      const dataDir = freshDataDir()
      const ipam = Ipam.make({ dataDir })
      yield* ipam.allocate({ network: "n", pool: V4_POOL, containerId: "a", ifname: "eth0" })
      yield* ipam.allocate({ network: "n", pool: V4_POOL, containerId: "b", ifname: "vé0" })
      // the same process goes on working...
      const c = yield* Effect.result(ipam.allocate({ network: "n", pool: V4_POOL, containerId: "c", ifname: "eth0" }))
      assert.isTrue(Result.isSuccess(c), `the next allocation failed: ${Result.isFailure(c) ? c.failure.message : ""}`)
      // ...and so does a fresh process
      const [usage] = child(dataDir, "n", V4_POOL_CONFIG, [{ op: "usage" }])
      assert.deepStrictEqual(allocationsOf(okOf(usage)), ["a/eth0 10.21.0.2", "b/vé0 10.21.0.3", "c/eth0 10.21.0.4"])
    }))
})

describe("compaction", () => {
  it.live("thousands of allocations and releases leave a small journal and the state intact", () =>
    Effect.gen(function*() {
      const dataDir = freshDataDir()
      const ipam = Ipam.make({ dataDir })
      const file = path.join(dataDir, "n", JOURNAL)
      const pool = Result.getOrThrow(resolvePool({ ranges: [[{ subnet: "10.22.0.0/22" }], [{ subnet: "fd00:22::/118" }]] }))
      // long-lived holders, then many short-lived ones
      for (let i = 0; i < 20; i++) yield* ipam.allocate({ network: "n", pool, containerId: `keep${i}`, ifname: "eth0" })
      let maxSize = 0
      let shrunk = 0
      for (let i = 0; i < 1500; i++) {
        yield* ipam.allocate({ network: "n", pool, containerId: `tmp${i}`, ifname: "eth0" })
        if (i % 3 === 0) yield* ipam.release({ network: "n", containerId: `keep${i % 20}`, ifname: "eth0" })
        if (i % 3 === 0) yield* ipam.allocate({ network: "n", pool, containerId: `keep${i % 20}`, ifname: "eth0" })
        yield* ipam.release({ network: "n", containerId: `tmp${i}`, ifname: "eth0" })
        const size = fs.statSync(file).size
        if (size < maxSize) shrunk++
        maxSize = Math.max(maxSize, size)
      }
      const size = fs.statSync(file).size
      const lineCount = fs.readFileSync(file, "latin1").split("\n").length - 1
      // 4000 changes of 2 lines each would be ~350 KB without compaction
      assert.isAbove(shrunk, 0, "the journal was never compacted")
      assert.isBelow(size, 100_000)
      assert.isBelow(lineCount, 2 * 1100)
      assert.isFalse(fs.existsSync(`${file}.compact`), "the temporary file of the compaction is left behind")

      const expected = Array.from({ length: 20 }, (_, i) => `keep${i}/eth0`).sort()
      const holders = (usage: ReadonlyArray<{ allocations: ReadonlyArray<{ containerId: string; ifname: string }> }>) =>
        [...new Set(usage.flatMap((u) => u.allocations.map((a) => `${a.containerId}/${a.ifname}`)))].sort()
      const here = yield* ipam.usage({ network: "n", pool })
      assert.deepStrictEqual(holders(here), expected)
      assert.deepStrictEqual(here.map((u) => u.used), [20, 20])
      // a fresh process reads the same state
      const [there] = child(dataDir, "n", { ranges: [[{ subnet: "10.22.0.0/22" }], [{ subnet: "fd00:22::/118" }]] }, [{ op: "usage" }])
      assert.deepStrictEqual(allocationsOf(okOf(there)), allocationsOf(here))
    }))

  it.live("after a compaction, a fresh process continues the sequential order where this one would", () =>
    Effect.gen(function*() {
      const dataDir = freshDataDir()
      const ipam = Ipam.make({ dataDir })
      const file = path.join(dataDir, "n", JOURNAL)
      yield* ipam.allocate({ network: "n", pool: V4_POOL, containerId: "keep", ifname: "eth0" }) // 10.21.0.2
      // allocate and release until the journal gets compacted, and stop right there
      let compacted = false
      for (let i = 0; i < 2000 && !compacted; i++) {
        yield* ipam.allocate({ network: "n", pool: V4_POOL, containerId: `t${i}`, ifname: "eth0" })
        const before = fs.statSync(file).size
        yield* ipam.release({ network: "n", containerId: `t${i}`, ifname: "eth0" })
        compacted = fs.statSync(file).size < before
      }
      assert.isTrue(compacted)
      copyStore(dataDir, "n", "copy")
      // the next sequential address, as this process (with its cache) sees it
      const here = (yield* ipam.allocate({ network: "n", pool: V4_POOL, containerId: "next", ifname: "eth0" }))[0]!.ip
      assert.notStrictEqual(here, "10.21.0.3") // the last handed out was far beyond .2
      // a fresh process on an identical copy must hand out the same one
      const [there] = child(dataDir, "copy", V4_POOL_CONFIG, [{ op: "allocate", containerId: "next", ifname: "eth0" }])
      assert.strictEqual(okOf(there)[0].ip, here)
    }))
})

describe("a torn last line (a writer killed mid-write) is cut off", () => {
  const torn = "+ 10.21.0.77 ghost eth0 10.21.0.0/24 1234"

  it.live("by a fresh reader: the next ADD works and the ghost is not recorded", () =>
    Effect.gen(function*() {
      const dataDir = freshDataDir()
      const ipam = Ipam.make({ dataDir })
      yield* ipam.allocate({ network: "n", pool: V4_POOL, containerId: "a", ifname: "eth0" })
      yield* ipam.allocate({ network: "n", pool: V4_POOL, containerId: "b", ifname: "eth0" })
      copyStore(dataDir, "n", "m") // never opened by this process
      const file = path.join(dataDir, "m", JOURNAL)
      const good = fs.readFileSync(file, "latin1")
      fs.appendFileSync(file, torn)
      const lines = child(dataDir, "m", V4_POOL_CONFIG, [
        { op: "allocate", containerId: "c", ifname: "eth0", requested: ["10.21.0.77"] },
        { op: "usage" }
      ])
      assert.strictEqual(okOf(lines[0])[0].ip, "10.21.0.77")
      assert.deepStrictEqual(allocationsOf(okOf(lines[1])), ["a/eth0 10.21.0.2", "b/eth0 10.21.0.3", "c/eth0 10.21.0.77"])
      const after = fs.readFileSync(file, "latin1")
      assert.isTrue(after.startsWith(good), "the complete lines before the torn one were changed")
      assert.notInclude(after, "ghost")
      assert.isTrue(after.endsWith("\n"))
    }))

  it.live("by a reader with a warm cache (this process)", () =>
    Effect.gen(function*() {
      const dataDir = freshDataDir()
      const ipam = Ipam.make({ dataDir })
      yield* ipam.allocate({ network: "n", pool: V4_POOL, containerId: "a", ifname: "eth0" })
      const file = path.join(dataDir, "n", JOURNAL)
      const good = fs.readFileSync(file, "latin1")
      fs.appendFileSync(file, torn.slice(0, 20))
      const b = yield* ipam.allocate({ network: "n", pool: V4_POOL, containerId: "b", ifname: "eth0" })
      assert.strictEqual(b[0]!.ip, "10.21.0.3")
      const after = fs.readFileSync(file, "latin1")
      assert.isTrue(after.startsWith(good))
      assert.strictEqual(after.slice(good.length).split("\n").length, 2) // exactly one new line
      const [usage] = child(dataDir, "n", V4_POOL_CONFIG, [{ op: "usage" }])
      assert.deepStrictEqual(allocationsOf(okOf(usage)), ["a/eth0 10.21.0.2", "b/eth0 10.21.0.3"])
    }))

  it.live("a journal cut inside its header is an empty store", () =>
    Effect.gen(function*() {
      const dataDir = freshDataDir()
      fs.mkdirSync(path.join(dataDir, "n"))
      fs.writeFileSync(path.join(dataDir, "n", JOURNAL), "containerscale-ip")
      const a = yield* Ipam.make({ dataDir }).allocate({ network: "n", pool: V4_POOL, containerId: "a", ifname: "eth0" })
      assert.strictEqual(a[0]!.ip, "10.21.0.2")
      assert.isTrue(fs.readFileSync(path.join(dataDir, "n", JOURNAL), "latin1").startsWith("containerscale-ipam 1\n+ 10.21.0.2 "))
    }))
})

describe("damage anywhere else stops the store (code 101) and changes nothing", () => {
  /**
   * A store with three records, in a data directory this process has never opened (so that it reads
   * the journal from scratch, as a new plugin process does).
   */
  const build = () =>
    Effect.gen(function*() {
      const scratch = freshDataDir()
      const ipam = Ipam.make({ dataDir: scratch })
      for (const id of ["a", "b", "c"]) yield* ipam.allocate({ network: "n", pool: V4_POOL, containerId: id, ifname: "eth0" })
      const dataDir = freshDataDir()
      fs.cpSync(path.join(scratch, "n"), path.join(dataDir, "n"), { recursive: true })
      return dataDir
    })

  /**
   * Every operation fails with StoreCorrupt naming the file (and the line), and no byte changes;
   * but release, which must not block container removal: it frees nothing and notes the damage in `damaged`.
   */
  const expectCorrupt = (dataDir: string, viaChild: boolean, ...fragments: ReadonlyArray<string>) =>
    Effect.gen(function*() {
      const file = path.join(dataDir, "n", JOURNAL)
      const before = snapshot(dataDir)
      const ipam = Ipam.make({ dataDir })
      const attempts = [
        ipam.allocate({ network: "n", pool: V4_POOL, containerId: "d", ifname: "eth0" }),
        ipam.allocate({ network: "n", pool: V4_POOL, containerId: "a", ifname: "eth0" }),
        ipam.gc({ network: "n", valid: [] }),
        ipam.usage({ network: "n", pool: V4_POOL }),
        ipam.leases({ network: "n", pool: V4_POOL, containerId: "a", ifname: "eth0" })
      ]
      for (const attempt of attempts) {
        const e = yield* Effect.flip(attempt as Effect.Effect<unknown, { _tag: string; cniCode: number; message: string }>)
        assert.strictEqual(e._tag, "StoreCorrupt")
        assert.strictEqual(e.cniCode, 101)
        assert.include(e.message, file)
        for (const f of fragments) assert.include(e.message, f)
      }
      const lines = viaChild ? child(dataDir, "n", V4_POOL_CONFIG, [{ op: "allocate", containerId: "e", ifname: "eth0" }, { op: "usage" }]) : []
      for (const l of lines) {
        assert.isTrue("err" in l)
        const err = (l as { err: { code: number; message: string } }).err
        assert.strictEqual(err.code, 101)
        assert.include(err.message, file)
        for (const f of fragments) assert.include(err.message, f)
      }
      assert.deepStrictEqual(snapshot(dataDir), before, "the store directory changed")
      assert.deepStrictEqual(yield* ipam.release({ network: "n", containerId: "a", ifname: "eth0" }), [])
      const { [path.join("n", "damaged")]: damage, ...after } = snapshot(dataDir)
      assert.deepStrictEqual(after, before, "release changed the store")
      const note = Buffer.from(damage ?? "", "base64").toString()
      assert.include(note, "release of a (eth0) freed nothing: ")
      assert.include(note, file)
    })

  const rewrite = (dataDir: string, f: (lines: Array<string>) => Array<string>) => {
    const file = path.join(dataDir, "n", JOURNAL)
    const lines = fs.readFileSync(file, "latin1").split("\n")
    fs.writeFileSync(file, f(lines).join("\n"), "latin1")
  }

  it.live("a line in the middle with a changed byte (checksum mismatch)", () =>
    Effect.gen(function*() {
      const dataDir = yield* build()
      // line 3 is "+ 10.21.0.3 b eth0 ...": make it claim .9
      rewrite(dataDir, (l) => l.map((x, i) => (i === 2 ? x.replace("10.21.0.3", "10.21.0.9") : x)))
      yield* expectCorrupt(dataDir, true, "line 3")
    }))

  it.live("a complete last line that is damaged is not a torn line", () =>
    Effect.gen(function*() {
      const dataDir = yield* build()
      rewrite(dataDir, (l) => l.map((x, i) => (i === 3 ? x.replace(" c ", " C ") : x)))
      yield* expectCorrupt(dataDir, false, "line 4")
    }))

  it.live("a line with a valid checksum but an unknown record", () =>
    Effect.gen(function*() {
      const dataDir = yield* build()
      const bad = "+ 10.21.0.300 x eth0 10.21.0.0/24"
      rewrite(dataDir, (l) => [...l.slice(0, 2), `${bad} ${journalChecksum(bad)}`, ...l.slice(2)])
      yield* expectCorrupt(dataDir, false, "line 3")
    }))

  it.live("an empty line in the middle", () =>
    Effect.gen(function*() {
      const dataDir = yield* build()
      rewrite(dataDir, (l) => [...l.slice(0, 2), "", ...l.slice(2)])
      yield* expectCorrupt(dataDir, false, "line 3")
    }))

  it.live("a garbage file", () =>
    Effect.gen(function*() {
      const dataDir = freshDataDir()
      fs.mkdirSync(path.join(dataDir, "n"))
      fs.writeFileSync(path.join(dataDir, "n", "lock"), "")
      fs.writeFileSync(path.join(dataDir, "n", JOURNAL), Buffer.from([0x00, 0xff, 0x13, 0x37, 0x0a, 0x42, 0x0a]))
      yield* expectCorrupt(dataDir, true, "line")
    }))

  it.live("a file with a foreign header (another program's, or a future format)", () =>
    Effect.gen(function*() {
      const dataDir = yield* build()
      rewrite(dataDir, (l) => ["containerscale-ipam 2", ...l.slice(1)])
      yield* expectCorrupt(dataDir, false, "line")
      const other = freshDataDir()
      fs.mkdirSync(path.join(other, "n"))
      fs.writeFileSync(path.join(other, "n", "lock"), "")
      fs.writeFileSync(path.join(other, "n", JOURNAL), "10.21.0.2\r\neth0")
      yield* expectCorrupt(other, false, "line")
    }))

  it.live("damage appended behind the back of a process with a warm cache is found at the right line", () =>
    Effect.gen(function*() {
      const dataDir = freshDataDir()
      const ipam = Ipam.make({ dataDir })
      yield* ipam.allocate({ network: "n", pool: V4_POOL, containerId: "a", ifname: "eth0" })
      yield* ipam.allocate({ network: "n", pool: V4_POOL, containerId: "b", ifname: "eth0" })
      const file = path.join(dataDir, "n", JOURNAL)
      fs.appendFileSync(file, "+ 10.21.0.9 x eth0 10.21.0.0/24 00000000\n") // line 4, a bad checksum
      const before = snapshot(dataDir)
      const e = yield* Effect.flip(ipam.allocate({ network: "n", pool: V4_POOL, containerId: "c", ifname: "eth0" }))
      assert.strictEqual(e._tag, "StoreCorrupt")
      assert.strictEqual(e.cniCode, 101)
      assert.include(e.message, file)
      assert.include(e.message, "line 4")
      assert.deepStrictEqual(snapshot(dataDir), before)
    }))
})

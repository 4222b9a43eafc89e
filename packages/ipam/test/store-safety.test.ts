import { inspectStore, Ipam, resolvePool } from "@containerscale/core"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { attachmentEnv, type CniEnv, cleanup, expectError, expectSuccess, netConf, requireBinary, runPlugin, snapshot } from "./support.ts"

/**
 * The compiled plugin and its stores: a relative `dataDir` is refused (it named a different store
 * in each working directory, and so handed out the same address twice); a store folder or file that
 * is a symbolic link or another uid's is refused without following it; and a damaged store does not
 * block DEL. Runs as root (chown to 65534).
 */

let root: string
beforeAll(() => {
  requireBinary()
  root = fs.mkdtempSync(path.join(os.tmpdir(), "cs-ipam-safety-"))
})
afterAll(() => cleanup(root))

let counter = 0
const fresh = (mode = 0o755) => {
  const dir = path.join(root, `d${++counter}`)
  fs.mkdirSync(dir)
  fs.chmodSync(dir, mode)
  return dir
}
const json = (o: unknown) => JSON.stringify(o)
const ips = (result: { ips: ReadonlyArray<{ address: string }> }) => result.ips.map((i) => i.address.split("/")[0])

const RANGES = [[{ subnet: "10.77.0.0/24" }]]
const POOL = Result.getOrThrow(resolvePool({ ranges: RANGES }))

describe.concurrent("a relative dataDir", () => {
  it("is refused with code 7 from any working directory, and creates nothing there", async () => {
    const here = fresh()
    const there = fresh()
    for (const dataDir of ["ipam", "", "./ipam", "../ipam"]) {
      const conf = json(netConf({ dataDir }))
      const runs: Array<[string, CniEnv, string]> = [
        ["ADD", attachmentEnv("ADD", "c1"), here],
        ["ADD", attachmentEnv("ADD", "c2"), there],
        ["DEL", attachmentEnv("DEL", "c1"), here],
        ["CHECK", attachmentEnv("CHECK", "c1"), there],
        ["GC", { CNI_COMMAND: "GC", CNI_PATH: "/opt/cni/bin" }, here],
        ["STATUS", { CNI_COMMAND: "STATUS", CNI_PATH: "/opt/cni/bin" }, there]
      ]
      for (const [what, env, cwd] of runs) {
        const e = expectError(await runPlugin(env, conf, cwd), `${what} with "dataDir": ${json(dataDir)}`)
        assert.strictEqual(e.code, 7, `${what} ${json(dataDir)}: ${e.msg}`)
        assert.include(e.msg, "ipam.dataDir: not an absolute path")
        assert.include(e.msg, `"dataDir": "/var/lib/containerscale/ipam"`)
      }
    }
    assert.deepStrictEqual(fs.readdirSync(here), [])
    assert.deepStrictEqual(fs.readdirSync(there), [])
    assert.deepStrictEqual(fs.readdirSync(root).filter((f) => f === "ipam"), [])
  })

  it("an absolute one is one store from every working directory", async () => {
    const dataDir = fresh()
    const conf = json(netConf({ dataDir }))
    const a = expectSuccess(await runPlugin(attachmentEnv("ADD", "c1"), conf, fresh()), "ADD c1")
    const b = expectSuccess(await runPlugin(attachmentEnv("ADD", "c2"), conf, fresh()), "ADD c2")
    assert.deepStrictEqual([ips(a), ips(b)], [["10.77.0.2"], ["10.77.0.3"]])
  })
})

/** A store of net1 with 66 dead lines (no compaction yet): the next ADD and DEL compact it. */
const storeAboutToCompact = async (dataDir: string) => {
  const scratch = fresh()
  const ipam = Ipam.make({ dataDir: scratch })
  await Effect.runPromise(Effect.gen(function*() {
    for (let i = 0; i < 33; i++) {
      yield* ipam.allocate({ network: "net1", pool: POOL, containerId: "c", ifname: "eth0" })
      yield* ipam.release({ network: "net1", containerId: "c", ifname: "eth0" })
    }
  }))
  fs.cpSync(path.join(scratch, "net1"), path.join(dataDir, "net1"), { recursive: true })
}

const secretFile = () => {
  const file = path.join(root, `secret${++counter}`)
  fs.writeFileSync(file, "root's secret\n", { mode: 0o600 })
  return file
}

describe.concurrent("links and other owners in a store", () => {
  it("a link at allocations.compact under a world-writable data dir: its target stays untouched, ADD and DEL fail clearly", async () => {
    const dataDir = fresh(0o777)
    await storeAboutToCompact(dataDir)
    const secret = secretFile()
    const link = path.join(dataDir, "net1", "allocations.compact")
    fs.symlinkSync(secret, link)
    const before = snapshot(dataDir)
    const conf = json(netConf({ dataDir }))
    for (const command of ["ADD", "DEL", "ADD", "DEL"]) {
      const e = expectError(await runPlugin(attachmentEnv(command, "c"), conf), command)
      assert.strictEqual(e.code, 5, e.msg)
      assert.include(e.msg, `${link} is a symbolic link`)
      assert.include(e.msg, "Nothing was read or changed")
    }
    assert.strictEqual(fs.readFileSync(secret, "utf8"), "root's secret\n")
    assert.isTrue(fs.lstatSync(link).isSymbolicLink())
    assert.deepStrictEqual(snapshot(dataDir), before)
  })

  it("a link at lock is refused: its target is neither opened for writing nor created", async () => {
    const dataDir = fresh(0o777)
    fs.mkdirSync(path.join(dataDir, "net1"))
    const missing = path.join(root, `created-by-the-plugin${++counter}`)
    const lock = path.join(dataDir, "net1", "lock")
    fs.symlinkSync(missing, lock)
    const e = expectError(await runPlugin(attachmentEnv("ADD", "c"), json(netConf({ dataDir }))), "ADD")
    assert.strictEqual(e.code, 5, e.msg)
    assert.include(e.msg, `${lock} is a symbolic link`)
    assert.isFalse(fs.existsSync(missing))
    assert.deepStrictEqual(fs.readdirSync(path.join(dataDir, "net1")), ["lock"])
  })

  it("a store folder owned by uid 65534 is refused by ADD and DEL, and STATUS names it", async () => {
    const dataDir = fresh()
    const conf = json(netConf({ dataDir }))
    expectSuccess(await runPlugin(attachmentEnv("ADD", "a"), conf), "ADD a")
    const store = path.join(dataDir, "net1")
    fs.chownSync(store, 65534, 65534)
    const before = snapshot(dataDir)
    for (const command of ["ADD", "DEL"]) {
      const e = expectError(await runPlugin(attachmentEnv(command, "a"), conf), command)
      assert.strictEqual(e.code, 5, e.msg)
      assert.include(e.msg, `${store} is owned by uid 65534, not by the plugin's uid 0`)
    }
    const status = expectError(await runPlugin({ CNI_COMMAND: "STATUS", CNI_PATH: "/opt/cni/bin" }, conf), "STATUS")
    assert.strictEqual(status.code, 50, status.msg)
    assert.include(status.msg, `${store} is owned by uid 65534`)
    assert.deepStrictEqual(snapshot(dataDir), before)
  })
})

describe.concurrent("a damaged store", () => {
  it("DEL exits 0, frees nothing and notes the damage; ADD still fails with 101; the journal is kept", async () => {
    const dataDir = fresh()
    const state = fresh()
    fs.mkdirSync(path.join(state, "events"))
    const env = (command: string, id: string) => ({ ...attachmentEnv(command, id), CONTAINERSCALE_STATE_DIR: state }) as CniEnv
    const conf = json(netConf({ dataDir }))
    for (const id of ["a", "b"]) expectSuccess(await runPlugin(env("ADD", id), conf), `ADD ${id}`)
    const file = path.join(dataDir, "net1", "allocations")
    const lines = fs.readFileSync(file, "latin1").split("\n")
    lines[1] = lines[1]!.replace(" a ", " x ")
    fs.writeFileSync(file, lines.join("\n"), "latin1")
    const journal = fs.readFileSync(file)

    const del = await runPlugin(env("DEL", "a"), conf)
    assert.strictEqual(expectSuccess(del, "DEL"), undefined)
    assert.strictEqual(del.stdout, "")
    const add = expectError(await runPlugin(env("ADD", "c"), conf), "ADD")
    assert.strictEqual(add.code, 101, add.msg)
    assert.include(add.msg, `${file} is damaged at line 2`)
    assert.isTrue(fs.readFileSync(file).equals(journal), "the damaged journal changed")

    const seen = inspectStore(path.join(dataDir, "net1"))
    assert.include(seen.corrupt, `${file} is damaged at line 2`)
    assert.strictEqual(seen.damage.length, 1)
    assert.include(seen.damage[0], `release of a (eth0) freed nothing: the IPAM store ${file} is damaged at line 2`)

    // the event journal: DEL succeeded and freed nothing (no "released"); ADD failed with 101
    const events = fs.readFileSync(path.join(state, "events", "events.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
    const [delEvent, addEvent] = events.slice(-2)
    assert.deepInclude(delEvent, { command: "DEL", result: "ok", network: "net1", dataDir })
    assert.notProperty(delEvent, "released")
    assert.deepInclude(addEvent, { command: "ADD", result: "error", code: 101, error: "StoreCorrupt" })
  })
})

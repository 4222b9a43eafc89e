import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import {
  attachmentEnv,
  BIN,
  checkJournal,
  expectSuccess,
  netConf,
  pool,
  cleanup,
  requireBinary,
  runPlugin,
  storeAllocations,
  track
} from "./support.ts"

/**
 * Plugin processes SIGKILLed at random moments (a node losing power, the OOM killer, a runtime
 * timing out): the store must stay readable and consistent, and the next ADD must work.
 */

const PER_ROUND = 16
const ROUNDS = 4
const POOL = { ranges: [[{ subnet: "10.91.0.0/24" }], [{ subnet: "fd00:91::/120" }]] }

let root: string
beforeAll(() => {
  requireBinary()
  root = fs.mkdtempSync(path.join(os.tmpdir(), "cs-ipam-crash-"))
})
afterAll(() => cleanup(root))

interface Outcome {
  readonly id: string
  readonly killed: boolean
  readonly exitCode: number | null
  readonly stdout: string
  readonly ms: number
}

/** Starts an ADD and SIGKILLs it after `killAfter` ms unless it has finished by then. */
const addAndMaybeKill = (stdin: string, id: string, killAfter: number): Promise<Outcome> =>
  new Promise((resolve, reject) => {
    const started = performance.now()
    const child = track(spawn(BIN, [], { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...attachmentEnv("ADD", id) } }))
    let stdout = ""
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d))
    child.stdin.on("error", () => {})
    child.on("error", reject)
    const timer = setTimeout(() => child.kill("SIGKILL"), killAfter)
    child.on("close", (exitCode, signal) => {
      clearTimeout(timer)
      resolve({ id, killed: signal === "SIGKILL", exitCode, stdout, ms: performance.now() - started })
    })
    child.stdin.end(stdin)
  })

/** A small seeded PRNG, so that the delays of a failing run can be told apart in the output. */
const mulberry32 = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

describe("SIGKILL at random moments", () => {
  it("leaves a consistent store; the next ADD works; DELs of everything empty the pool", async () => {
    const dataDir = fs.mkdtempSync(path.join(root, "d"))
    const journal = path.join(dataDir, "net1", "allocations")
    const conf = JSON.stringify(netConf({ cniVersion: "1.0.0", dataDir, ranges: POOL.ranges }))
    const seed = Date.now() % 2 ** 31
    const random = mulberry32(seed)
    const started: Array<string> = []
    /** what a successful ADD answered: id -> its addresses */
    const acknowledged = new Map<string, Array<string>>()
    let killed = 0

    const stored = async () =>
      (await storeAllocations(dataDir, "net1", POOL)).map((a) => `${a.containerId}/${a.ifname} ${a.ip}`).sort()

    const record = (o: Outcome) => {
      if (o.killed) {
        killed++
        return
      }
      assert.strictEqual(o.exitCode, 0, `ADD ${o.id} was not killed but failed: ${o.stdout}`)
      const result = JSON.parse(o.stdout) as { ips: Array<{ address: string }> }
      acknowledged.set(o.id, result.ips.map((ip) => ip.address.split("/")[0]!))
    }

    /** The checks after every round. */
    const checkConsistent = async (what: string) => {
      const inStore = await stored() // the store is readable (no StoreCorrupt)
      assert.deepStrictEqual(checkJournal(journal), inStore, `${what}: the journal and the store disagree`)
      const ips = inStore.map((s) => s.split(" ")[1]!)
      assert.strictEqual(new Set(ips).size, ips.length, `${what}: an address is held twice`)
      const startedSet = new Set(started)
      for (const s of inStore) {
        const [owner] = s.split(" ")
        const [id, ifname] = owner!.split("/")
        assert.isTrue(startedSet.has(id!) && ifname === "eth0", `${what}: ${s} belongs to no started attachment`)
      }
      for (const [id, addresses] of acknowledged) {
        for (const ip of addresses) assert.include(inStore, `${id}/eth0 ${ip}`, `${what}: the acknowledged ${ip} of ${id} is lost`)
      }
      // every attachment holds one address per range set, or none (an ADD is one write)
      const perId = new Map<string, number>()
      for (const s of inStore) perId.set(s.split("/")[0]!, (perId.get(s.split("/")[0]!) ?? 0) + 1)
      for (const [id, n] of perId) assert.strictEqual(n, 2, `${what}: ${id} holds ${n} addresses`)
    }

    // a first round that is not killed tells how long a concurrent ADD takes on this machine now
    const warm = Array.from({ length: PER_ROUND }, (_, i) => `warm${i}`)
    started.push(...warm)
    const warmOutcomes = await Promise.all(warm.map((id) => addAndMaybeKill(conf, id, 600_000)))
    warmOutcomes.forEach(record)
    const durations = warmOutcomes.map((o) => o.ms).sort((a, b) => a - b)
    let typical = durations[durations.length >> 1]!
    await checkConsistent("warm-up")

    for (let round = 0; round < ROUNDS; round++) {
      const ids = Array.from({ length: PER_ROUND }, (_, i) => `k${round}-${i}`)
      started.push(...ids)
      // half the kills within 0-60 ms of the start, the others anywhere in a typical run
      const delays = ids.map((_, i) => (i % 2 === 0 ? random() * 60 : random() * typical * 1.2))
      const outcomes = await Promise.all(ids.map((id, i) => addAndMaybeKill(conf, id, delays[i]!)))
      outcomes.forEach(record)
      const finished = outcomes.filter((o) => !o.killed).map((o) => o.ms).sort((a, b) => a - b)
      if (finished.length > 0) typical = Math.max(typical, finished[finished.length >> 1]!)
      await checkConsistent(`round ${round + 1} (seed ${seed})`)

      // the next ADD works
      const next = `next${round}`
      started.push(next)
      const result = expectSuccess(await runPlugin(attachmentEnv("ADD", next), conf), `ADD after round ${round + 1}`)
      acknowledged.set(next, result.ips.map((ip: { address: string }) => ip.address.split("/")[0]))
      await checkConsistent(`after the ADD following round ${round + 1}`)
    }
    assert.isAbove(killed, 0, "no process was killed: the test did not test anything")
    assert.isAbove(acknowledged.size, PER_ROUND + ROUNDS, "no killed-round ADD succeeded")

    // a DEL for every attachment ever started (killed or not) succeeds and empties the pool
    const dels = await pool(started.map((id) => () => runPlugin(attachmentEnv("DEL", id), conf)), 16)
    dels.forEach((run, i) => assert.strictEqual(expectSuccess(run, `DEL ${started[i]}`), undefined))
    assert.deepStrictEqual(await stored(), [])
    assert.deepStrictEqual(checkJournal(journal), [])
  }, 240_000)
})

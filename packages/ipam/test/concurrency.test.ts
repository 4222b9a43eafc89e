import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import {
  attachmentEnv,
  checkJournal,
  expectSuccess,
  netConf,
  type PluginRun,
  cleanup,
  requireBinary,
  runPlugin,
  storeAllocations
} from "./support.ts"

/**
 * Many plugin processes at once on one pool, as a runtime starting a burst of containers does:
 * no address may be handed out twice and no acknowledged allocation may be lost.
 */

const N = 64
const POOL = { ranges: [[{ subnet: "10.90.0.0/24" }], [{ subnet: "fd00:90::/120" }]] }

let root: string
beforeAll(() => {
  requireBinary()
  root = fs.mkdtempSync(path.join(os.tmpdir(), "cs-ipam-conc-"))
})
afterAll(() => cleanup(root))

const json = (o: unknown) => JSON.stringify(o)
const conf = (dataDir: string, strategy: string) =>
  json(netConf({ cniVersion: "1.1.0", dataDir, ranges: POOL.ranges, ipam: { strategy } }))

const addAll = (dataDir: string, strategy: string, ids: ReadonlyArray<string>) =>
  Promise.all(ids.map((id) => runPlugin(attachmentEnv("ADD", id), conf(dataDir, strategy))))
const delAll = (dataDir: string, ids: ReadonlyArray<string>) =>
  Promise.all(ids.map((id) => runPlugin(attachmentEnv("DEL", id), conf(dataDir, "sequential"))))

/** The addresses of ADD results, checked for success. */
const resultsOf = (runs: ReadonlyArray<PluginRun>, ids: ReadonlyArray<string>) =>
  runs.map((run, i) => {
    const result = expectSuccess(run, `ADD ${ids[i]}`)
    assert.strictEqual(result.ips.length, 2, `ADD ${ids[i]}: ${run.stdout}`)
    return result.ips.map((ip: { address: string }) => ip.address.split("/")[0] as string) as Array<string>
  })

const stored = async (dataDir: string) =>
  (await storeAllocations(dataDir, "net1", POOL)).map((a) => `${a.containerId}/${a.ifname} ${a.ip}`).sort()

describe("concurrent plugin processes on one pool", () => {
  it("64 ADDs at once, then 64 DELs at once, in rounds (sequential, random, dense), and a mixed round: no duplicates, no losses", async () => {
    const dataDir = fs.mkdtempSync(path.join(root, "d"))
    const journal = path.join(dataDir, "net1", "allocations")
    /** the store (read through the core's Ipam) and the journal (read line by line) both hold exactly `expected` */
    const expectStore = async (expected: ReadonlyArray<string>, what: string) => {
      assert.deepStrictEqual(await stored(dataDir), [...expected].sort(), `${what}: the store differs`)
      assert.deepStrictEqual(checkJournal(journal), [...expected].sort(), `${what}: the journal differs`)
    }
    for (const [round, strategy] of (["sequential", "random", "dense"] as const).entries()) {
      const what = `round ${round + 1} (${strategy})`
      const ids = Array.from({ length: N }, (_, i) => `r${round}-c${i}`)
      const addresses = resultsOf(await addAll(dataDir, strategy, ids), ids)
      const all = addresses.flat()
      assert.strictEqual(new Set(all).size, 2 * N, `${what}: an address was handed out twice`)
      let expected = ids.flatMap((id, i) => addresses[i]!.map((ip) => `${id}/eth0 ${ip}`))
      await expectStore(expected, what)
      if (strategy === "dense") {
        // dense from an empty pool: exactly the lowest 64 addresses of each family (.2-.65)
        const v4 = all.filter((a) => !a.includes(":")).map((a) => Number(a.split(".")[3])).sort((a, b) => a - b)
        assert.deepStrictEqual(v4, Array.from({ length: N }, (_, i) => i + 2))

        // the mixed round: DELs of half of them and ADDs of 32 new ones, interleaved, all at once
        const gone = ids.slice(0, N / 2)
        const fresh = Array.from({ length: N / 2 }, (_, i) => `m-c${i}`)
        const runs = await Promise.all(
          gone.flatMap((id, i) => [
            runPlugin(attachmentEnv("DEL", id), conf(dataDir, strategy)).then((run) => ({ kind: "DEL", id, run })),
            runPlugin(attachmentEnv("ADD", fresh[i]!), conf(dataDir, strategy)).then((run) => ({ kind: "ADD", id: fresh[i]!, run }))
          ])
        )
        expected = expected.filter((e) => !gone.includes(e.split("/")[0]!))
        for (const { kind, id, run } of runs) {
          const out = expectSuccess(run, `mixed ${kind} ${id}`)
          if (kind === "DEL") assert.strictEqual(out, undefined)
          else for (const ip of out.ips as Array<{ address: string }>) expected.push(`${id}/eth0 ${ip.address.split("/")[0]}`)
        }
        assert.strictEqual(new Set(expected.map((e) => e.split(" ")[1])).size, 2 * N, "mixed round: an address was handed out twice")
        await expectStore(expected, "mixed round")
        ids.splice(0, N / 2, ...fresh)
      }

      const dels = await delAll(dataDir, ids)
      dels.forEach((run, i) => assert.strictEqual(expectSuccess(run, `DEL ${ids[i]}`), undefined))
      await expectStore([], `${what}: after the DELs`)
    }
  }, 240_000)

  it("16 concurrent ADDs for the same attachment (a runtime retrying) all get the same addresses", async () => {
    const dataDir = fs.mkdtempSync(path.join(root, "d"))
    const ids = Array.from({ length: 16 }, () => "same")
    const addresses = resultsOf(await addAll(dataDir, "random", ids), ids)
    for (const a of addresses) assert.deepStrictEqual(a, addresses[0])
    assert.deepStrictEqual(await stored(dataDir), addresses[0]!.map((ip) => `same/eth0 ${ip}`).sort())
  }, 120_000)
})

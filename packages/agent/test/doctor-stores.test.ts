import { Ipam, resolvePool } from "@containerscale/core"
import { LocalApi } from "@containerscale/core/member"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { type Check, runDoctor } from "../src/cli/doctor.ts"

/**
 * `containerscalectl doctor` and the IPAM stores: a store the plugins refuse (another uid), a
 * damaged one (and the DELs that freed nothing because of it), one that was damaged, and a relative
 * `dataDir` are reported with how to fix them. Runs as root (chown to 65534).
 */

let root: string
beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "cs-doctor-stores-"))
})
afterAll(() => {
  fs.rmSync(root, { recursive: true, force: true })
})

const RANGES = [[{ subnet: "10.77.0.0/24" }]]
const POOL = Result.getOrThrow(resolvePool({ ranges: RANGES }))

const conflist = (conf: string, name: string, dataDir: string) =>
  fs.writeFileSync(path.join(conf, `${name}.conflist`), JSON.stringify({
    cniVersion: "1.0.0",
    name,
    plugins: [{ type: "containerscale", mode: "router", ipam: { type: "containerscale-ipam", dataDir, ranges: RANGES } }]
  }))

const doctor = (conf: string) =>
  Effect.runPromise(runDoctor({
    stateDir: path.join(root, "state"),
    cniConfDir: conf,
    cniBinDir: path.join(root, "bin"),
    tailscaledSocket: path.join(root, "none.sock"),
    json: false
  }).pipe(Effect.provide(LocalApi.layer)))

const find = (checks: ReadonlyArray<Check>, name: string) => {
  const c = checks.find((x) => x.name === name)
  assert.isDefined(c, `no check "${name}" in: ${checks.map((x) => x.name).join(", ")}`)
  return c!
}

describe("doctor and the IPAM stores", () => {
  it("reports a damaged store, one of another uid, one that was damaged, and a relative dataDir", async () => {
    const conf = path.join(root, "net.d")
    fs.mkdirSync(conf)
    const dataDir = path.join(root, "ipam")
    const scratch = path.join(root, "scratch")
    for (const name of ["damaged", "foreign", "healed", "good"]) conflist(conf, name, dataDir)
    conflist(conf, "relative", "ipam")
    await Effect.runPromise(Effect.gen(function*() {
      const ipam = Ipam.make({ dataDir: scratch })
      for (const network of ["damaged", "foreign", "healed", "good"]) {
        yield* ipam.allocate({ network, pool: POOL, containerId: "a", ifname: "eth0" })
      }
    }))
    fs.cpSync(scratch, dataDir, { recursive: true })

    // damaged: a changed byte in its journal, then a DEL that could free nothing
    const journal = path.join(dataDir, "damaged", "allocations")
    fs.writeFileSync(journal, fs.readFileSync(journal, "latin1").replace(" a eth0 ", " b eth0 "), "latin1")
    const released = await Effect.runPromise(Ipam.make({ dataDir }).release({ network: "damaged", containerId: "a", ifname: "eth0" }))
    assert.deepStrictEqual(released, [])
    // healed: its damage record stays after the journal was restored
    fs.writeFileSync(path.join(dataDir, "healed", "damaged"), "2026-01-01T00:00:00.000Z release of a (eth0) freed nothing: ...\n", { mode: 0o600 })
    // foreign: another uid's store folder
    fs.chownSync(path.join(dataDir, "foreign"), 65534, 65534)

    const checks = await doctor(conf)
    const damaged = find(checks, "ipam store damaged")
    assert.strictEqual(damaged.status, "FAIL")
    assert.include(damaged.detail, "damaged, ADD fails with code 101")
    assert.include(damaged.detail, `${journal} is damaged at line 2`)
    assert.include(damaged.detail, "1 DEL(s) freed nothing because of it")
    assert.include(damaged.fix, `move ${journal} aside`)

    const foreign = find(checks, "ipam store foreign")
    assert.strictEqual(foreign.status, "FAIL")
    assert.include(foreign.detail, `the plugins refuse it: ${path.join(dataDir, "foreign")} is owned by uid 65534`)

    const healed = find(checks, "ipam store healed")
    assert.strictEqual(healed.status, "WARN")
    assert.include(healed.fix, `rm ${path.join(dataDir, "healed", "damaged")}`)

    assert.deepInclude(find(checks, `ipam stores in ${dataDir}`), { status: "OK", detail: "1 store(s) readable" })

    const relative = find(checks, "network relative")
    assert.strictEqual(relative.status, "FAIL")
    assert.include(relative.detail, `"dataDir": "ipam": the plugins refuse it, write an absolute path`)
  })
})

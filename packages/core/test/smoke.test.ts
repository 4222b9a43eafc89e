import { assert, describe, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Ipam, resolvePool } from "@containerscale/core"

describe("Ipam", () => {
  it.effect("allocates once per attachment", () =>
    Effect.gen(function*() {
      const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-ipam-"))
      const pool = Result.getOrThrow(resolvePool({ ranges: [[{ subnet: "10.1.0.0/24" }]] }))
      const ipam = Ipam.make({ dataDir })
      const a = yield* ipam.allocate({ network: "n", pool, containerId: "c1", ifname: "eth0" })
      const b = yield* ipam.allocate({ network: "n", pool, containerId: "c1", ifname: "eth0" })
      assert.deepStrictEqual(a, b)
      assert.strictEqual(a[0]?.address, "10.1.0.2/24")
      fs.rmSync(dataDir, { recursive: true })
    }))
})

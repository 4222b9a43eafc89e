import { decodeNetworkConfig } from "@containerscale/cni"
import { InvalidNetworkConfig, PoolConfig } from "@containerscale/core"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"

describe("the schemas reject wrong types with InvalidNetworkConfig naming the key", () => {
  const base = { cniVersion: "1.0.0", name: "net1", type: "containerscale-ipam" }
  const decodeFails = (config: unknown, ...fragments: ReadonlyArray<string>) =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(decodeNetworkConfig(config))
      assert.instanceOf(error, InvalidNetworkConfig)
      assert.strictEqual(error.cniCode, 7)
      for (const f of fragments) assert.include(error.message, f)
    })

  it.effect("ranges must be an array of arrays of range objects", () =>
    decodeFails({ ...base, ipam: { type: "containerscale-ipam", ranges: "x" } }, "ranges"))

  it.effect("strategy must be one of the three", () =>
    decodeFails({ ...base, ipam: { type: "containerscale-ipam", subnet: "10.0.0.0/24", strategy: "fastest" } }, "strategy"))

  it.effect("exclude must be an array of strings", () =>
    decodeFails({ ...base, ipam: { type: "containerscale-ipam", subnet: "10.0.0.0/24", exclude: "10.0.0.7" } }, "exclude"))

  it.effect("name must be present", () => decodeFails({ cniVersion: "1.0.0", type: "x" }, "name"))

  it("PoolConfig accepts the documented shape", () => {
    const decoded = Schema.decodeUnknownOption(PoolConfig)({
      ranges: [[{ subnet: "10.0.0.0/24", rangeStart: "10.0.0.5" }]],
      strategy: "random",
      exclude: ["10.0.0.7", "10.0.0.64/27"],
      routes: [{ dst: "0.0.0.0/0" }]
    })
    assert.strictEqual(decoded._tag, "Some")
  })
})

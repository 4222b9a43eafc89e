import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Call, decodeInput, InvalidRequest, Network } from "../src/protocol.ts"
import { call, network } from "./helpers.ts"

/** A network's name follows CNI's (and Podman's) rule, at create and at every setup. */

const named = (name: string) => ({ ...network({ mode: "router" }), name })
const refusal = (text: string, schema: typeof Network | typeof Call = Network, what = "create") =>
  Effect.runPromise(Effect.flip(decodeInput(schema, text, what)))

describe("Netavark network names", () => {
  it("refuses a name with a ':' (which named another network in the host end's alias), saying what a name may hold", async () => {
    const e = await refusal(JSON.stringify(named("a:b")))
    assert.instanceOf(e, InvalidRequest)
    assert.strictEqual(
      e.message,
      `create: "name": network name "a:b" is invalid: use at most 255 letters, digits, "_", "." and "-", starting with a letter or digit`
    )
    const setup = await refusal(JSON.stringify(call("aa", null, named("a:b"), ["10.237.1.5"])), Call, "setup")
    assert.include(setup.message, `setup: "network.name": network name "a:b" is invalid`)
  })

  it("refuses what Podman refuses: a leading '-' or '.', a '/', white space, more than 255 bytes", async () => {
    for (const name of ["-a", ".a", "a/b", "a b", "n".repeat(256), ""]) {
      assert.include((await refusal(JSON.stringify(named(name)))).message, "is invalid", name)
    }
  })

  it("takes what Podman names a network: podman, csnet, my_net.v2-a, 255 bytes", async () => {
    for (const name of ["podman", "csnet", "my_net.v2-a", "9net", "n".repeat(255)]) {
      const { value } = await Effect.runPromise(decodeInput(Network, JSON.stringify(named(name)), "create"))
      assert.strictEqual(value.name, name)
    }
  })
})

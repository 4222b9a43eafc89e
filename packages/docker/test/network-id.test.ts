import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { CreateNetwork, CreateEndpoint, decodeRequest, DriverError } from "../src/protocol.ts"
import { hex64 } from "./helpers.ts"

/** A network is `docker-<first 12 of its ID>` in the core: its ID follows the rule of CNI's network names. */

describe("libnetwork IDs", () => {
  it("refuses an ID with a ':' or a '/', or longer than 128, saying what an ID may hold", async () => {
    for (const id of ["a:b", "a/b", "-ab", "i".repeat(129)]) {
      const e = await Effect.runPromise(Effect.flip(decodeRequest(CreateNetwork)({ NetworkID: id })))
      assert.instanceOf(e, DriverError)
      assert.include(e.message, `an ID of at most 128 letters, digits, "_", "." and "-", starting with a letter or digit`, id)
    }
    const e = await Effect.runPromise(Effect.flip(decodeRequest(CreateEndpoint)({ NetworkID: hex64("a"), EndpointID: "x:y" })))
    assert.include(e.message, "EndpointID")
  })

  it("takes dockerd's IDs: 64 hex digits", async () => {
    const req = await Effect.runPromise(decodeRequest(CreateNetwork)({ NetworkID: hex64("0f") }))
    assert.strictEqual(req.NetworkID, hex64("0f"))
  })
})

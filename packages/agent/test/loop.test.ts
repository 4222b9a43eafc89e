import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { loop } from "../src/agent.ts"
import { AgentFailure } from "../src/errors.ts"
import { memoryLogger } from "../src/log.ts"

/** The agent's loops retry failures with doubling backoff (no crash loop) and run on time after a success. */

describe("agent loops", () => {
  it.effect("back off 1, 2, 4 s after failures, then return to the interval after a success", () =>
    Effect.gen(function*() {
      const log = memoryLogger()
      const runs: Array<number> = []
      let calls = 0
      const pass = Effect.suspend(() => {
        calls++
        return Effect.flatMap(Clock.currentTimeMillis, (now) => {
          runs.push(now)
          return calls <= 3 ? Effect.fail(new AgentFailure({ message: "Headscale unreachable" })) : Effect.succeed(true)
        })
      })
      const fiber = yield* Effect.forkChild(loop("test", 30, pass, log))
      for (let i = 0; i < 100; i++) {
        yield* Effect.yieldNow
        yield* TestClock.adjust("1 second")
      }
      yield* Fiber.interrupt(fiber)
      assert.deepStrictEqual(runs.slice(0, 6), [0, 1000, 3000, 7000, 37000, 67000])
      assert.strictEqual(log.lines.filter((l) => l.msg === "test failed; retrying").length, 3)
      assert.deepStrictEqual(log.lines.map((l) => l["failures"]), [1, 2, 3])
    }))
})

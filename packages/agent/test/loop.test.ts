import * as Log from "@containerscale/core/log"
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Fiber, Queue } from "effect"
import { TestClock } from "effect/testing"
import { loop } from "../src/agent.ts"
import { AgentFailure } from "../src/errors.ts"

/** The agent's loops retry failures with doubling backoff (no crash loop) and run on time after a success. */

describe("agent loops", () => {
  it.effect("back off 1, 2, 4 s after failures, then return to the interval after a success", () =>
    Effect.gen(function*() {
      const log = Log.memory()
      const runs: Array<number> = []
      let calls = 0
      const pass = Effect.suspend(() => {
        calls++
        return Effect.flatMap(Clock.currentTimeMillis, (now) => {
          runs.push(now)
          return calls <= 3 ? Effect.fail(new AgentFailure({ message: "Headscale unreachable" })) : Effect.succeed(true)
        })
      })
      const fiber = yield* Effect.forkChild(loop("test", 30, pass).pipe(Effect.provide(log.layer)))
      for (let i = 0; i < 100; i++) {
        yield* Effect.yieldNow
        yield* TestClock.adjust("1 second")
      }
      yield* Fiber.interrupt(fiber)
      assert.deepStrictEqual(runs.slice(0, 6), [0, 1000, 3000, 7000, 37000, 67000])
      assert.strictEqual(log.lines.filter((l) => l.msg === "test failed; retrying").length, 3)
      assert.deepStrictEqual(log.lines.map((l) => l["failures"]), [1, 2, 3])
      assert.deepStrictEqual(log.lines.map((l) => [l.level, l["error"]]), Array(3).fill(["warn", "Headscale unreachable"]))
    }))

  it.effect("back off after a pass that is not done yet without logging it, and run at once when woken", () =>
    Effect.gen(function*() {
      const log = Log.memory()
      const runs: Array<number> = []
      const wakeups = yield* Queue.sliding<void>(1)
      const pass = Effect.flatMap(Clock.currentTimeMillis, (now) => {
        runs.push(now)
        return Effect.succeed(runs.length > 2)
      })
      const fiber = yield* Effect.forkChild(loop("test", 30, pass, Queue.take(wakeups)).pipe(Effect.provide(log.layer)))
      const tick = (n: number) =>
        Effect.gen(function*() {
          for (let i = 0; i < n; i++) {
            yield* Effect.yieldNow
            yield* TestClock.adjust("1 second")
          }
        })
      yield* tick(10)
      assert.deepStrictEqual(runs, [0, 1000, 3000])
      // woken 10 s into the 30 s interval: a pass now, then the interval again from there
      yield* Queue.offer(wakeups, undefined)
      yield* tick(1)
      yield* Queue.offer(wakeups, undefined)
      yield* tick(30)
      yield* Fiber.interrupt(fiber)
      assert.deepStrictEqual(runs, [0, 1000, 3000, 10000, 11000, 41000])
      assert.deepStrictEqual(log.lines, [])
    }))
})

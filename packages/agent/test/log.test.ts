import * as Log from "@containerscale/core/log"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

/** The binaries' one logger: JSON lines through Effect's Logger, and the facade over it. */

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-log-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

describe("@containerscale/core/log", () => {
  it("prints time, level, msg, then the fields; Redacted values and errors print safely", async () => {
    const log = Log.memory()
    const key = Redacted.make("hskey-api-secret", { label: "apiKey" })
    await Effect.runPromise(
      Effect.gen(function*() {
        yield* Effect.logInfo("router reconciled", { ok: true, added: ["10.244.1.0/24"], key, nested: { key }, big: 10n })
        yield* Effect.logWarning("GC failed; retrying", { error: new Error("EACCES") }).pipe(Effect.annotateLogs({ loop: "GC" }))
        yield* Effect.logDebug("quiet")
      }).pipe(Effect.provide(log.layer))
    )
    assert.deepStrictEqual(log.lines, [
      { level: "info", msg: "router reconciled", ok: true, added: ["10.244.1.0/24"], key: "<redacted>", nested: { key: "<redacted>" }, big: "10" },
      { level: "warn", msg: "GC failed; retrying", loop: "GC", error: "EACCES" },
      { level: "debug", msg: "quiet" }
    ])
    const first = JSON.parse(log.output[0]!) as Record<string, unknown>
    assert.deepStrictEqual(Object.keys(first).slice(0, 3), ["time", "level", "msg"])
    assert.isFalse(Number.isNaN(Date.parse(first["time"] as string)))
    assert.notInclude(log.output.join(""), "secret")
  })

  it("keeps to the level and appends to a file; the facade writes through the same logger", async () => {
    const file = path.join(dir, "agent.log")
    await Effect.runPromise(
      Effect.gen(function*() {
        yield* Effect.logDebug("not shown")
        yield* Effect.logWarning("shown")
        const log = yield* Log.facade
        log.info("not shown either", { a: 1 })
        log.error("facade", { a: 1 })
      }).pipe(Effect.provide(Log.layer({ level: "warn", file })))
    )
    const lines = fs.readFileSync(file, "utf8").trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>)
    assert.deepStrictEqual(lines.map(({ time: _, ...rest }) => rest), [{ level: "warn", msg: "shown" }, { level: "error", msg: "facade", a: 1 }])
    assert.strictEqual(fs.statSync(file).mode & 0o777, 0o600)
  })

  it("fails to build when the log file cannot be opened", async () => {
    const result = await Effect.runPromise(Effect.result(Effect.provide(Effect.void, Log.layer({ file: path.join(dir, "none", "x.log") }))))
    assert.strictEqual(result._tag, "Failure")
    assert.include(result._tag === "Failure" ? result.failure.message : "", "cannot open the log file")
  })
})

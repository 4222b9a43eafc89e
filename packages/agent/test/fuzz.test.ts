import { filesUnder } from "@containerscale/testing"
import { distBin } from "@containerscale/sandbox"
import { afterAll, assert, describe, it } from "@effect/vitest"
import fc from "fast-check"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"


/** A fixed seed keeps the suite deterministic; set FUZZ_SEED to explore others (fast-check prints the seed of a failure). */
const SEED = Number(process.env["FUZZ_SEED"] ?? 20261203)
/**
 * Random and boundary values in the agent's configuration (flags, environment, the JSON config
 * file): each bad one ends the compiled agent with one line on stderr and exit 2, before it
 * listens or writes anything.
 */

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-agent-fuzz-"))
const stateDir = path.join(dir, "state")
const configFile = path.join(dir, "config.json")
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

const run = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
    const child = spawn(path.join(distBin(), "containerscale-agent"), args, {
      env: { PATH: process.env["PATH"], CONTAINERSCALE_STATE_DIR: stateDir, ...env },
      stdio: ["ignore", "ignore", "pipe"],
      timeout: 10_000
    })
    let stderr = ""
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d))
    child.on("error", reject)
    child.on("close", (code) => resolve({ code, stderr }))
  })

const anything = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.double(),
  fc.string(),
  fc.constantFrom("", "a".repeat(5000), "__proto__"),
  fc.array(fc.string(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.string(), { maxKeys: 3 })
)

const badAddress = fc.constantFrom("foo", "127.0.0.1:99999", "127.0.0.1:-1", ":", "[::1", "127.0.0.1:0x50", "999.1.1.1:9450", "")

/** One bad setting: a flag, a variable, or a key of the config file (a valid file otherwise). */
const sample = fc.oneof(
  badAddress.map((a) => ({ args: ["--metrics-address", a], env: {}, file: undefined as unknown })),
  badAddress.map((a) => ({ args: [], env: { CONTAINERSCALE_METRICS_ADDRESS: a }, file: undefined as unknown })),
  fc.constantFrom("--bogus", "-x", "--state-dir").map((flag) => ({ args: [flag], env: {}, file: undefined as unknown })),
  fc.oneof(fc.string(), fc.constantFrom("{", "[]", "1", "null")).filter((text) => {
    try {
      const v: unknown = JSON.parse(text)
      return typeof v !== "object" || v === null || Array.isArray(v)
    } catch {
      return true
    }
  }).map((text) => ({ args: ["--config", configFile], env: {}, file: text as unknown })),
  fc.oneof(
    fc.record({ metricsAddress: badAddress }),
    fc.record({ router: fc.record({ podCidrs: fc.constantFrom(["10.0.0.0/33"], ["999.1.1.1/8"], ["banana"], [""]) }) }),
    fc.record({ router: fc.record({ intervalSeconds: fc.oneof(fc.integer({ max: 0 }), fc.integer({ min: 3601 })) }) }),
    fc.record({ gcSeconds: fc.oneof(fc.integer({ max: 9 }), fc.constant("often")) }),
    fc.record({ log: fc.record({ level: fc.constantFrom("loud", "") }) }),
    fc.record({ headscale: fc.record({ url: fc.constantFrom("not a url", "ftp://x") }) }),
    fc.record({ stateDir: anything.filter((v) => typeof v !== "string") })
  ).map((config) => ({ args: ["--config", configFile], env: {}, file: JSON.stringify(config) as unknown }))
)

describe("fuzzing the agent's configuration", () => {
  it("a bad setting ends the agent with one line and exit 2, before it writes anything", async () => {
    await fc.assert(
      fc.asyncProperty(sample, async ({ args, env, file }) => {
        fs.rmSync(stateDir, { recursive: true, force: true })
        if (typeof file === "string") fs.writeFileSync(configFile, file)
        const r = await run(args, env)
        const where = `${args.join(" ")} ${JSON.stringify(env)} ${String(file).slice(0, 200)} -> ${r.code} ${r.stderr.slice(0, 400)}`
        assert.strictEqual(r.code, 2, where)
        // a flag the parser refuses (unknown, or without a value) is followed by the usage text
        const usage = args[0] !== undefined && args[0] !== "--config" && (args[1] === undefined || args[1] === "")
        assert.isAtMost(r.stderr.trim().split("\n").length, usage ? 30 : 1, where)
        assert.notMatch(r.stderr, /\n\s+at |function\(|=>/, where)
        assert.deepStrictEqual(filesUnder(stateDir), [], where)
      }),
      { numRuns: 60, seed: SEED }
    )
  })
})

import { distBin } from "@containerscale/sandbox"
import { assert, describe, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"

const BIN = path.join(distBin(), "containerscale-docker")
const VERSION = (JSON.parse(fs.readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version

describe("containerscale-docker's command line", () => {
  it("says its package's version, its usage, and refuses what it does not know with exit 2", () => {
    const version = spawnSync(BIN, ["--version"], { encoding: "utf8" })
    assert.deepStrictEqual([version.status, version.stdout], [0, `containerscale-docker ${VERSION}\n`])
    const help = spawnSync(BIN, ["--help"], { encoding: "utf8" })
    assert.strictEqual(help.status, 0)
    assert.include(help.stdout, "--version")
    const unknown = spawnSync(BIN, ["--bogus"], { encoding: "utf8" })
    assert.strictEqual(unknown.status, 2)
    assert.include(unknown.stderr, "unknown argument --bogus")
  })
})

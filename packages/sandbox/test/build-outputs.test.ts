import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { distBin, repoRoot } from "../src/repo.ts"

/** What `npm run build` leaves: one compiled executable and a link per program, and a small turbo cache. */

const PROGRAMS = ["containerscale", "containerscale-agent", "containerscale-docker", "containerscale-ipam", "containerscale-netavark", "containerscalectl"]
// a cold build caches about 150 MB (the executable and the two stand-ins, compressed); it was 3.5 GB
// while every package's cache entry held every binary
const TURBO_CACHE_LIMIT = 200 * 1024 * 1024

interface DryTask {
  readonly taskId: string
  readonly hash: string
  readonly command: string
  readonly cache: { readonly status: "HIT" | "MISS" }
}

describe("the build's outputs", () => {
  it("are one executable in dist/bin and a link to it for every other program, each answering as itself", () => {
    const entries = fs.readdirSync(distBin(), { withFileTypes: true }).filter((e) => !e.name.startsWith("."))
    expect(entries.map((e) => e.name).sort()).toEqual(PROGRAMS)
    expect(entries.filter((e) => e.isFile()).map((e) => e.name)).toEqual(["containerscale"])
    for (const e of entries.filter((e) => e.name !== "containerscale")) {
      expect(e.isSymbolicLink()).toBe(true)
      expect(fs.readlinkSync(path.join(distBin(), e.name))).toBe("containerscale")
    }
    expect(execFileSync(path.join(distBin(), "containerscale"), ["--list"], { encoding: "utf8" }).trim().split("\n").sort()).toEqual(PROGRAMS)
    expect(execFileSync(path.join(distBin(), "containerscale-agent"), ["--version"], { encoding: "utf8" })).toMatch(/^containerscale-agent \d+\.\d+\.\d+/)
    expect(execFileSync(path.join(distBin(), "containerscale"), ["containerscale-docker", "--version"], { encoding: "utf8" })).toMatch(/^containerscale-docker \d+\.\d+\.\d+/)
  })

  it("keep turbo's cache of one whole build small", () => {
    const root = repoRoot()
    const dry = execFileSync(path.join(root, "node_modules", ".bin", "turbo"), ["run", "build", "--dry=json"], { cwd: root, encoding: "utf8" })
    const tasks = (JSON.parse(dry) as { tasks: Array<DryTask> }).tasks.filter((t) => t.command !== "<NONEXISTENT>")
    expect(tasks.filter((t) => t.cache.status !== "HIT").map((t) => t.taskId), "the suite runs after npm run build: every task is cached").toEqual([])
    const cache = path.join(root, ".turbo", "cache")
    const bytes = tasks.flatMap((t) => fs.readdirSync(cache).filter((f) => f.startsWith(t.hash)).map((f) => fs.statSync(path.join(cache, f)).size))
    expect(bytes.length).toBeGreaterThanOrEqual(tasks.length)
    expect(bytes.reduce((a, b) => a + b, 0)).toBeLessThan(TURBO_CACHE_LIMIT)
  })
})

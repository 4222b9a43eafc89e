import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"

const example = path.join(import.meta.dirname, "..", "src", "allocate.ts")
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-embed-core-"))
afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }))

describe("embedding the core in a Node program", () => {
  it("allocates the first address of the pool, prints it and releases it, with the store on disk", () => {
    const run = () => execFileSync(process.execPath, ["--conditions=source", example, dataDir], { encoding: "utf8" })
    const leases = [JSON.parse(run()), JSON.parse(run())]
    // released each time, so the second run gets the same first address
    for (const l of leases) expect(l).toEqual([{ family: 4, ip: "10.244.1.2", address: "10.244.1.2/24", gateway: "10.244.1.1", rangeSet: 0 }])
    expect(fs.readdirSync(dataDir).length).toBeGreaterThan(0)
  })

  it("is the program the core's README shows", () => {
    const readme = fs.readFileSync(path.join(import.meta.dirname, "..", "..", "..", "packages", "core", "README.md"), "utf8")
    expect(readme).toContain("```ts\n" + fs.readFileSync(example, "utf8") + "```")
  })
})

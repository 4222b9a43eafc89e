import { execPlugin } from "@containerscale/testing"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { repoRoot } from "../src/repo.ts"

/**
 * The npm packages as a consumer gets them: packed as `npm run release` packs them, installed from
 * the tarballs into a fresh project beside the newest effect 4.x from the registry, then the
 * examples type-checked and run there and the npm bins started.
 */

const root = repoRoot()
const work = fs.mkdtempSync(path.join(os.tmpdir(), "cs-published-"))
const packDir = path.join(work, "pack")
const project = path.join(work, "project")
const bin = path.join(root, "node_modules", ".bin")
const env = { ...process.env, PATH: `${bin}:${process.env.PATH ?? ""}` }
const run = (file: string, args: ReadonlyArray<string>, cwd = project) =>
  execFileSync(file, args, { cwd, env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })

let tarballs: Array<string> = []

beforeAll(() => {
  run(path.join(root, "scripts", "pack-packages"), [packDir], root)
  tarballs = fs.readdirSync(path.join(packDir, "packages")).map((f) => path.join(packDir, "packages", f))
  fs.mkdirSync(path.join(project, "src"), { recursive: true })
  fs.copyFileSync(path.join(root, "examples", "embed-core", "src", "allocate.ts"), path.join(project, "src", "allocate.ts"))
  fs.copyFileSync(path.join(root, "examples", "custom-cni-plugin", "src", "pass-through.ts"), path.join(project, "src", "pass-through.ts"))
  fs.writeFileSync(path.join(project, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }))
  fs.writeFileSync(
    path.join(project, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        target: "ES2023", module: "NodeNext", moduleResolution: "NodeNext", strict: true, noEmit: true,
        exactOptionalPropertyTypes: true, types: ["node"],
        // the condition this repository uses for its own sources: the packages must not answer it
        customConditions: ["source"]
      },
      include: ["src"]
    })
  )
  run("npm", ["install", "--no-audit", "--no-fund", "--loglevel=error", ...tarballs, "effect@^4", "@effect/platform-node@^4", "typescript@^6", "@types/node@^24"])
}, 300_000)

afterAll(() => fs.rmSync(work, { recursive: true, force: true }))

const manifest = (name: string) => JSON.parse(fs.readFileSync(path.join(project, "node_modules", "@containerscale", name, "package.json"), "utf8"))

describe("the published packages", () => {
  it("are every public package, with the license, metadata and no repository-only export condition", () => {
    expect(tarballs.map((t) => path.basename(t)).sort()).toEqual(
      ["agent", "cni", "core", "docker", "ipam", "netavark", "testing"].map((p) => `containerscale-${p}-${manifest(p).version}.tgz`)
    )
    for (const name of ["agent", "cni", "core", "docker", "ipam", "netavark", "testing"]) {
      const m = manifest(name)
      expect(fs.readFileSync(path.join(project, "node_modules", "@containerscale", name, "LICENSE"), "utf8")).toContain("Apache License")
      expect(m.repository).toEqual(expect.objectContaining({ type: "git", directory: `packages/${name}` }))
      expect(m.sideEffects).toBe(false)
      expect(JSON.stringify([m.exports, m.imports])).not.toContain('"source"')
      expect(m.scripts).toBeUndefined()
      expect(m.dependencies?.effect).toBeUndefined()
    }
    expect(manifest("core").peerDependencies).toEqual({ effect: "^4.1.0" })
    expect(manifest("core").cpu).toEqual(["x64", "arm64"])
  })

  it("install beside the consumer's newest effect 4.x as its one copy", () => {
    const newest = run("npm", ["view", "effect@^4", "version", "--json"])
    const versions = [JSON.parse(newest)].flat() as Array<string>
    const installed = JSON.parse(fs.readFileSync(path.join(project, "node_modules", "effect", "package.json"), "utf8")).version
    expect(installed).toBe(versions.at(-1))
    const copies = run("find", ["node_modules", "-path", "*/effect/package.json", "-not", "-path", "*/effect/*/effect/*"]).trim().split("\n")
    expect(copies).toEqual(["node_modules/effect/package.json"])
  })

  it("type-check the core's README example and the custom plugin example, with the `source` condition on", () => {
    expect(run(path.join(project, "node_modules", ".bin", "tsc"), ["-p", "."])).toBe("")
  })

  it("run the core's README example under Node, with the flock addon built for this CPU", () => {
    const dataDir = path.join(work, "ipam")
    const out = run(process.execPath, ["src/allocate.ts", dataDir])
    expect(JSON.parse(out)).toEqual([{ family: 4, ip: "10.244.1.2", address: "10.244.1.2/24", gateway: "10.244.1.1", rangeSet: 0 }])
    const prebuilt = fs.readdirSync(path.join(project, "node_modules", "@containerscale", "core", "native", "prebuilds")).sort()
    expect(prebuilt).toEqual(["linux-arm64", "linux-x64"])
    expect(run("file", ["-L", path.join(project, "node_modules", "@containerscale", "core", "native", "prebuilds", "linux-arm64", "flock.node")])).toContain("ARM aarch64")
  })

  it("run the custom plugin example as a CNI plugin", async () => {
    const plugin = path.join(work, "pass-through")
    fs.writeFileSync(plugin, `#!/bin/sh\nexec "${process.execPath}" "${path.join(project, "src", "pass-through.ts")}" "$@"\n`, { mode: 0o755 })
    const prevResult = { cniVersion: "1.1.0", interfaces: [{ name: "eth0" }], ips: [{ address: "10.1.2.3/24", interface: 0 }] }
    const config = { cniVersion: "1.1.0", name: "custom", type: "pass-through", stateDir: path.join(work, "state"), prevResult }
    const add = await execPlugin(plugin, { command: "ADD", containerId: "c1", netns: "/proc/self/ns/net", ifname: "eth0" }, config)
    expect(add.exitCode, add.stdout + add.stderr).toBe(0)
    expect((add.json as { ips: unknown }).ips).toEqual(prevResult.ips)
  })

  it("start their npm bins, one bundled file each, at the package's version", () => {
    const version = manifest("core").version
    const bins = path.join(project, "node_modules", ".bin")
    for (const program of ["containerscale", "containerscale-ipam", "containerscale-netavark", "containerscale-docker", "containerscale-agent", "containerscalectl"]) {
      expect(run(path.join(bins, program), ["--version"]).trim()).toMatch(new RegExp(`^${program} v?${version.replaceAll(".", "\\.")}$`))
    }
    const answer = execFileSync(path.join(bins, "containerscale-ipam"), [], { input: "{}", env: { ...env, CNI_COMMAND: "VERSION" }, encoding: "utf8" })
    expect(JSON.parse(answer).supportedVersions).toContain("1.1.0")
  })

  it("publish as packed (changeset publish --dry-run from the pack directory)", () => {
    const out = execFileSync(path.join(bin, "changeset"), ["publish", "--from-pack-dir", packDir, "--no-git-tag"], {
      cwd: root, env: { ...env, npm_config_dry_run: "true", CI: "true" }, encoding: "utf8"
    })
    for (const name of ["agent", "cni", "core", "docker", "ipam", "netavark", "testing"]) expect(out).toContain(`@containerscale/${name}@`)
  })
})

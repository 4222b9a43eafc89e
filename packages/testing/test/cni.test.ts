import { execPlugin, findPlugin, runConflist, uniquePrefix } from "@containerscale/testing"
import { referencePluginDir } from "../../sandbox/src/repo.ts"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

// A recording plugin: saves its stdin and CNI_COMMAND, answers ADD with a result naming itself.
const recorder = `#!/bin/sh
set -e
me=$(basename "$0")
n=$(ls "$REC_DIR" | wc -l)
cat > "$REC_DIR/$(printf %03d "$n")-$me-$CNI_COMMAND.json"
if [ "$CNI_COMMAND" = ADD ]; then printf '{"cniVersion":"1.0.0","dns":{"domain":"%s"}}' "$me"; fi
`

interface Recorded {
  readonly file: string
  readonly config: Record<string, unknown> & { prevResult?: { dns?: { domain?: string } } }
}

describe("CNI runner", () => {
  let dir = ""
  let bin = ""
  let rec = ""

  const recorded = (): Array<Recorded> =>
    fs.readdirSync(rec).sort().map((file) => ({ file, config: JSON.parse(fs.readFileSync(path.join(rec, file), "utf8")) }))

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), `${uniquePrefix()}-`))
    bin = path.join(dir, "bin")
    rec = path.join(dir, "rec")
    fs.mkdirSync(bin)
    fs.mkdirSync(rec)
    for (const name of ["rec-a", "rec-b"]) fs.writeFileSync(path.join(bin, name), recorder, { mode: 0o755 })
    fs.writeFileSync(path.join(bin, "env-dump"), "#!/bin/sh\nenv\n", { mode: 0o755 })
  })

  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

  it("sets all six CNI variables, empty when absent, like libcni", async () => {
    const out = await execPlugin(path.join(bin, "env-dump"), { command: "GC", path: "/x:/y" }, {})
    expect(out.exitCode).toBe(0)
    expect(out.json).toBeUndefined()
    const env = new Set(out.stdout.split("\n"))
    for (const line of ["CNI_COMMAND=GC", "CNI_CONTAINERID=", "CNI_NETNS=", "CNI_IFNAME=", "CNI_ARGS=", "CNI_PATH=/x:/y"]) {
      expect(env.has(line), line).toBe(true)
    }
    const withArgs = await execPlugin(path.join(bin, "env-dump"), { command: "ADD", args: { IgnoreUnknown: "1", IP: "10.235.0.9" } }, "{}")
    expect(withArgs.stdout.split("\n")).toContain("CNI_ARGS=IgnoreUnknown=1;IP=10.235.0.9")
  })

  it("runs a reference plugin: VERSION and an error JSON with a code", async () => {
    const bridge = findPlugin("bridge", `/nonexistent:${referencePluginDir}`)
    const version = await execPlugin(bridge, { command: "VERSION" }, { cniVersion: "1.0.0" })
    expect(version.exitCode).toBe(0)
    expect((version.json as { supportedVersions: Array<string> }).supportedVersions).toContain("1.0.0")
    const bad = await execPlugin(bridge, { command: "ADD", containerId: "c", netns: "/nonexistent", ifname: "eth0", path: referencePluginDir }, "{not json")
    expect(bad.exitCode).not.toBe(0)
    expect(typeof (bad.json as { code: unknown }).code).toBe("number")
    expect(() => findPlugin("no-such-plugin", referencePluginDir)).toThrow(/not found/)
  })

  it("ADD in order feeding prevResult; CHECK in order and DEL in reverse with the final ADD result", async () => {
    const list = {
      cniVersion: "1.0.0",
      name: "rec-net",
      plugins: [
        { type: "rec-a", capabilities: { ips: true } },
        { type: "rec-b", capabilities: { mac: false } }
      ]
    }
    const options = {
      containerId: "c1",
      ifname: "eth0",
      path: bin,
      cacheDir: path.join(dir, "cache"),
      capabilityArgs: { ips: ["10.235.0.5/24"], mac: "02:00:00:00:00:01" },
      env: { REC_DIR: rec }
    }
    const add = await runConflist(list, "ADD", options)
    expect(add.ok).toBe(true)
    expect(add.result).toEqual({ cniVersion: "1.0.0", dns: { domain: "rec-b" } })
    expect(fs.readdirSync(options.cacheDir)).toEqual(["rec-net-c1-eth0"])
    const check = await runConflist(list, "CHECK", options)
    expect(check.ok).toBe(true)
    const del = await runConflist(list, "DEL", options)
    expect(del.ok).toBe(true)
    expect(fs.readdirSync(options.cacheDir)).toEqual([])

    const calls = recorded()
    expect(calls.map((c) => c.file.slice(4))).toEqual([
      "rec-a-ADD.json", "rec-b-ADD.json", "rec-a-CHECK.json", "rec-b-CHECK.json", "rec-b-DEL.json", "rec-a-DEL.json"
    ])
    for (const c of calls) {
      expect(c.config.name).toBe("rec-net")
      expect(c.config.cniVersion).toBe("1.0.0")
    }
    expect(calls[0]!.config.prevResult).toBeUndefined()
    expect(calls[0]!.config.runtimeConfig).toEqual({ ips: ["10.235.0.5/24"] })
    expect(calls[1]!.config.runtimeConfig).toBeUndefined()
    expect(calls[1]!.config.prevResult?.dns?.domain).toBe("rec-a")
    for (const c of calls.slice(2)) expect(c.config.prevResult?.dns?.domain).toBe("rec-b")
  })

  it("stops at the first plugin that fails", async () => {
    fs.rmSync(rec, { recursive: true })
    fs.mkdirSync(rec)
    const list = { cniVersion: "1.0.0", name: "rec-net", plugins: [{ type: "rec-a" }, { type: "rec-b" }] }
    const failed = await runConflist(list, "ADD", { containerId: "c2", ifname: "eth0", path: bin, env: { REC_DIR: path.join(dir, "missing") } })
    expect(failed.ok).toBe(false)
    expect(failed.calls.map((c) => c.type)).toEqual(["rec-a"])
    expect(failed.calls[0]!.outcome.exitCode).not.toBe(0)
    expect(recorded()).toEqual([])
  })
})

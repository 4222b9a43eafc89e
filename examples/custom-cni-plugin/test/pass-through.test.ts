import { PluginEvent } from "@containerscale/core"
import { execPlugin } from "@containerscale/testing"
import { assert, describe, it } from "@effect/vitest"
import { Schema } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

/** A plugin of one's own built with runCniBinary: the skel's protocol, and its calls in the node's journal under its name. */

describe("a plugin of one's own on runCniBinary", () => {
  it("answers as a CNI plugin and records its calls under its own name, which the agent's journal reader takes", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-custom-plugin-"))
    try {
      const stateDir = path.join(dir, "state")
      fs.mkdirSync(path.join(stateDir, "events"), { recursive: true })
      const plugin = path.join(dir, "pass-through")
      const source = path.join(import.meta.dirname, "..", "src", "pass-through.ts")
      fs.writeFileSync(plugin, `#!/bin/sh\nexec "${process.execPath}" --conditions=source "${source}" "$@"\n`, { mode: 0o755 })
      const prevResult = { cniVersion: "1.0.0", interfaces: [{ name: "eth0" }], ips: [{ address: "10.1.2.3/24", interface: 0 }] }
      const config = { cniVersion: "1.0.0", name: "custom", type: "pass-through", stateDir, prevResult }
      const add = await execPlugin(plugin, { command: "ADD", containerId: "c1", netns: "/proc/self/ns/net", ifname: "eth0" }, config)
      assert.strictEqual(add.exitCode, 0, add.stdout + add.stderr)
      assert.deepStrictEqual((add.json as { ips: unknown }).ips, prevResult.ips)
      const bad = await execPlugin(plugin, { command: "ADD", containerId: "c2", netns: "/proc/self/ns/net", ifname: "eth0" }, { ...config, prevResult: { ips: "x" } })
      assert.strictEqual(bad.exitCode, 1)
      assert.strictEqual((bad.json as { code: number }).code, 7)

      const lines = fs.readFileSync(path.join(stateDir, "events", "events.jsonl"), "utf8").trim().split("\n")
      const events = lines.map((l) => Schema.decodeUnknownSync(PluginEvent)(JSON.parse(l)))
      assert.deepStrictEqual(events.map((e) => [e.plugin, e.command, e.mode, e.network, e.result, e.code]), [
        ["pass-through", "ADD", "plugin", "custom", "ok", undefined],
        ["pass-through", "ADD", "plugin", "custom", "error", 7]
      ])
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})

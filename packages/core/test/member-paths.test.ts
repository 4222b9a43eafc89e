import { assert, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { memberPaths } from "../src/tailscale/tailscaled.ts"

/** Member folders keep their socket within what a unix socket path can hold, whatever the identity. */

describe("member paths", () => {
  const root = "/var/lib/containerscale/member"

  it("a short identity is its own folder", () => {
    assert.strictEqual(memberPaths(root, "tailnet_default_web").dir, `${root}/tailnet_default_web`)
    assert.strictEqual(memberPaths(root, "net_web-1.x").dir, `${root}/net_web-1.x`)
    // an earlier version's record holds the raw identity: it is looked up where that version put it
    assert.strictEqual(memberPaths(root, "a/b c").dir, `${root}/a_b_c`)
  })

  it("a long identity (a network and a 64-digit container id) is shortened, stably and distinctly", () => {
    const id = (c: string) => `docker-82066f71767d_${c.repeat(64)}`
    const a = memberPaths(root, id("a"))
    assert.isAtMost(Buffer.byteLength(a.socket), 107, a.socket)
    assert.match(a.dir, /\/docker-82066f71767d_a{7}\+[0-9a-f]{12}$/)
    assert.strictEqual(memberPaths(root, id("a")).dir, a.dir)
    assert.notStrictEqual(memberPaths(root, id("b")).dir, a.dir)
    assert.notStrictEqual(memberPaths(root, `${id("a")}x`).dir, a.dir)
  })

  it("a long identity's folder made by an earlier version (the whole name) is still found, by its record", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-member-paths-"))
    try {
      const identity = "tailnet_monitoring_prometheus-server-0-persistent"
      assert.notStrictEqual(memberPaths(dir, identity).dir, path.join(dir, identity))
      fs.mkdirSync(path.join(dir, identity))
      // without a record nothing tells whose it is: earlier names were lossy
      assert.notStrictEqual(memberPaths(dir, identity).dir, path.join(dir, identity))
      fs.writeFileSync(path.join(dir, identity, "attachment.json"), JSON.stringify({
        network: "tailnet", containerId: "c1", ifname: "eth0", netns: "/x", identity, persistent: true,
        tailscaled: "tailscaled", userspace: false, extraFlags: []
      }))
      assert.strictEqual(memberPaths(dir, identity).dir, path.join(dir, identity))
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})

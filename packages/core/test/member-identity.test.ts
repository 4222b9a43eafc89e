import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { Spelling } from "../src/networkOptions.ts"
import { type MemberAttachment, resolveMemberSettings } from "../src/tailscale/memberSettings.ts"
import { memberIdentity, memberPaths } from "../src/tailscale/tailscaled.ts"

/**
 * The identity names the member's folder (and keeps a persistent node): different workloads must
 * never share one, whatever characters their names hold.
 */

const spelling: Spelling = {
  name: (o) => o,
  set: (o, v) => `"${o}": "${v}"`,
  environment: "the test's environment",
  reader: "the test"
}

const root = "/var/lib/containerscale/member"

const identityOf = (a: Omit<MemberAttachment, "ifname">) =>
  Effect.runSync(resolveMemberSettings({}, { ifname: "eth0", ...a }, {}, spelling, { withAuthKey: false })).identity

const folderOf = (a: Omit<MemberAttachment, "ifname">) => memberPaths(root, identityOf(a)).dir

describe("member identity", () => {
  it("network a + container b_c and network a_b + container c are two folders", () => {
    const pairs: ReadonlyArray<readonly [Omit<MemberAttachment, "ifname">, Omit<MemberAttachment, "ifname">]> = [
      [{ network: "a", containerId: "1", name: "b_c" }, { network: "a_b", containerId: "2", name: "c" }],
      [{ network: "a", containerId: "b_c" }, { network: "a_b", containerId: "c" }],
      [{ network: "a", containerId: "1", namespace: "b_c", name: "d" }, { network: "a_b", containerId: "2", namespace: "c", name: "d" }],
      [{ network: "a", containerId: "1", namespace: "b", name: "c_d" }, { network: "a", containerId: "2", namespace: "b_c", name: "d" }],
      // a name alone and a namespace with a name
      [{ network: "a", containerId: "1", name: "b_c" }, { network: "a", containerId: "2", namespace: "b", name: "c" }]
    ]
    for (const [x, y] of pairs) {
      assert.notStrictEqual(identityOf(x), identityOf(y), JSON.stringify([x, y]))
      assert.notStrictEqual(folderOf(x), folderOf(y), JSON.stringify([x, y]))
    }
  })

  it("names that differ only in characters a folder name cannot hold are different folders", () => {
    const names = ["web_1", "web:1", "web/1", "web 1", "web%1", "web%5F1", "wéb_1", "web+1", "web_1 "]
    const folders = names.map((name) => folderOf({ network: "net", containerId: "c", name }))
    assert.strictEqual(new Set(folders).size, names.length, folders.join("\n"))
    for (const f of folders) assert.match(path.basename(f), /^[A-Za-z0-9._%-]+$/)
    // the same when the names are long enough to be shortened
    const long = names.map((name) => folderOf({ network: "net", containerId: "c", namespace: "x".repeat(30), name: `${name}${"y".repeat(30)}` }))
    assert.strictEqual(new Set(long).size, names.length, long.join("\n"))
  })

  it("the identity is the network and the workload's names, escaped; plain names keep their earlier identity", () => {
    assert.strictEqual(identityOf({ network: "net", containerId: "c1", name: "web" }), "net_web")
    assert.strictEqual(identityOf({ network: "tailnet", containerId: "c1", namespace: "shop", name: "cart-0" }), "tailnet_shop_cart-0")
    assert.strictEqual(identityOf({ network: "docker-82066f71767d", containerId: "ab12" }), "docker-82066f71767d_ab12")
    assert.strictEqual(identityOf({ network: "a", containerId: "1", name: "b_c" }), "a_b%5Fc")
    assert.strictEqual(memberIdentity([".hidden", "..", "x.y"]), "%2Ehidden_%2E._x.y")
  })

  it("is injective over many small part lists, and every socket fits a unix socket path", () => {
    const alphabet = ["a", "_", "%", ".", "-", "/", "5F", "é"]
    const seen = new Map<string, string>()
    let n = 0
    const walk = (parts: Array<string>, depth: number) => {
      if (parts.length >= 2) {
        const key = JSON.stringify(parts)
        const dir = memberPaths(root, memberIdentity(parts)).dir
        const before = seen.get(dir)
        assert.isTrue(before === undefined || before === key, `${key} and ${before} share ${dir}`)
        seen.set(dir, key)
        n++
      }
      if (depth === 0) return
      for (const p of ["", ...alphabet.flatMap((a) => alphabet.map((b) => a + b))].slice(0, 24)) walk([...parts, p], depth - 1)
    }
    walk(["n"], 2)
    assert.isAbove(n, 500)
    const id = memberIdentity(["a-network-with-a-long-name", "a-namespace_with_underscores", "pod/é".repeat(20)])
    assert.isAtMost(Buffer.byteLength(memberPaths(root, id).socket), 107)
  })

  it("a folder an earlier version made under the lossy name is found by its record, and only by its own identity", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-member-identity-"))
    try {
      const earlier = path.join(dir, "a_b_c")
      fs.mkdirSync(earlier, { mode: 0o700 })
      // the earlier version's record of network a, container b_c
      fs.writeFileSync(path.join(earlier, "attachment.json"), JSON.stringify({
        network: "a", containerId: "1", ifname: "eth0", netns: "/x", identity: "a_b_c", persistent: true,
        tailscaled: "tailscaled", userspace: false, extraFlags: []
      }))
      assert.strictEqual(memberPaths(dir, memberIdentity(["a", "b_c"])).dir, earlier)
      assert.notStrictEqual(memberPaths(dir, memberIdentity(["a_b", "c"])).dir, earlier)
      // the record's own (raw) identity, as the agent reads it back, is the same folder
      assert.strictEqual(memberPaths(dir, "a_b_c").dir, earlier)
      // once the new folder exists, it wins
      fs.mkdirSync(path.join(dir, "a_b%5Fc"))
      assert.strictEqual(memberPaths(dir, memberIdentity(["a", "b_c"])).dir, path.join(dir, "a_b%5Fc"))
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})

import { cniPath, listLinks, netnsPath, netnsScope, runConflist } from "@containerscale/testing"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

/** `containerscale` as the first plugin of a chain, followed by the reference tuning and portmap. */

const scope = netnsScope()
const node = scope.create("node")
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-chain-"))
afterAll(() => {
  scope.dispose()
  fs.rmSync(dir, { recursive: true, force: true })
})

const list = {
  cniVersion: "1.0.0",
  name: "chained",
  plugins: [
    { type: "containerscale", mode: "router", ipam: { type: "containerscale-ipam", dataDir: path.join(dir, "ipam"), ranges: [[{ subnet: "10.236.11.0/24" }]] } },
    { type: "tuning", mtu: 1200 },
    { type: "portmap", capabilities: { portMappings: true } }
  ]
}

describe("chaining", () => {
  it("later plugins get our result as prevResult and pass it on; CHECK and DEL walk the chain", async () => {
    const ctr = scope.create("c")
    const options = {
      containerId: "chain1",
      netns: netnsPath(ctr),
      ifname: "eth0",
      path: cniPath(),
      runIn: node,
      cacheDir: path.join(dir, "cache"),
      capabilityArgs: { portMappings: [{ hostPort: 18080, containerPort: 80, protocol: "tcp" }] }
    }
    const add = await runConflist(list, "ADD", options)
    assert.isTrue(add.ok, JSON.stringify(add.error))
    const result = add.result as any
    assert.strictEqual(result.interfaces[1].name, "eth0")
    assert.strictEqual(result.ips[0].address, "10.236.11.2/24")
    const mtu = JSON.parse(execFileSync("ip", ["-n", ctr, "-json", "link", "show", "eth0"], { encoding: "utf8" }))[0].mtu
    assert.strictEqual(mtu, 1200) // tuning ran on our interface
    const nat = execFileSync("ip", ["netns", "exec", node, "iptables", "-t", "nat", "-S"], { encoding: "utf8" })
    assert.include(nat, "18080")
    // portmap 1.1.1's CHECK looks for ip6tables chains its ADD never made on an IPv4-only
    // attachment, so CHECK walks the chain without it.
    const check = await runConflist({ ...list, plugins: list.plugins.slice(0, 2) }, "CHECK", { ...options, prevResult: result })
    assert.isTrue(check.ok, JSON.stringify(check.error))
    const del = await runConflist(list, "DEL", options)
    assert.isTrue(del.ok, JSON.stringify(del.error))
    assert.deepStrictEqual(listLinks(node, "cs"), [])
    assert.notInclude(execFileSync("ip", ["netns", "exec", node, "iptables", "-t", "nat", "-S"], { encoding: "utf8" }), "18080")
  })
})

import { listLinks, netnsPath, netnsScope, runConflist } from "@containerscale/testing"
import { cniPath } from "@containerscale/sandbox"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

/**
 * `containerscale` as the first plugin of a chain, followed by the reference tuning and portmap;
 * and after the reference bridge plugin, as a second interface that carries only the tailnet.
 */

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

  it("after bridge, ours is a second interface for the tailnet only, and the bridge's result is passed on", async () => {
    const ctr = scope.create("after")
    const bridge = `${node.slice(0, 9)}br`
    const after = {
      cniVersion: "1.0.0",
      name: "after-bridge",
      plugins: [
        {
          type: "bridge", bridge, isGateway: true, ipMasq: false,
          ipam: { type: "host-local", dataDir: path.join(dir, "host-local"), ranges: [[{ subnet: "10.236.12.0/24" }]], routes: [{ dst: "0.0.0.0/0" }] }
        },
        {
          type: "containerscale", mode: "router", interface: "tailnet0",
          ipam: { type: "containerscale-ipam", dataDir: path.join(dir, "ipam"), ranges: [[{ subnet: "10.236.13.0/24" }]] }
        }
      ]
    }
    const options = { containerId: "after1", netns: netnsPath(ctr), ifname: "eth0", path: cniPath(), runIn: node, cacheDir: path.join(dir, "cache") }
    const add = await runConflist(after, "ADD", options)
    assert.isTrue(add.ok, JSON.stringify(add.error))
    const result = add.result as any
    const bridgeResult = add.calls[0]!.outcome.json as any
    assert.deepStrictEqual(result.interfaces.slice(0, bridgeResult.interfaces.length), bridgeResult.interfaces)
    assert.strictEqual(result.interfaces.at(-1).name, "tailnet0")
    assert.deepStrictEqual(result.ips[0], bridgeResult.ips[0])
    assert.deepStrictEqual(result.ips[1], { address: "10.236.13.2/24", gateway: "10.236.13.1", interface: result.interfaces.length - 1 })
    assert.deepStrictEqual(result.routes, [...bridgeResult.routes, { dst: "100.64.0.0/10", gw: "10.236.13.1" }])
    const routes = execFileSync("ip", ["-n", ctr, "route", "show"], { encoding: "utf8" })
    assert.match(routes, /default via 10\.236\.12\.1 dev eth0/)
    assert.match(routes, /100\.64\.0\.0\/10 via 10\.236\.13\.1 dev tailnet0/)
    execFileSync("ip", ["netns", "exec", ctr, "busybox", "ping", "-c", "1", "-W", "3", "10.236.13.1"], { stdio: "ignore" })
    // bridge 1.1.1's CHECK expects every address of the result on CNI_IFNAME, whatever its
    // interface index, so the chain's CHECK runs ours alone.
    const check = await runConflist({ ...after, plugins: after.plugins.slice(1) }, "CHECK", { ...options, prevResult: result })
    assert.isTrue(check.ok, JSON.stringify(check.error))
    const del = await runConflist(after, "DEL", options)
    assert.isTrue(del.ok, JSON.stringify(del.error))
    assert.deepStrictEqual(listLinks(node, "cs").filter((l) => l !== bridge), [])
    assert.deepStrictEqual(listLinks(ctr, "tailnet0"), [])
    execFileSync("ip", ["-n", node, "link", "delete", bridge])
  })
})

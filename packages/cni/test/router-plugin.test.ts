import { distBin, execPlugin, listLinks, netnsPath, netnsScope, type PluginInvocation } from "@containerscale/testing"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

/**
 * The `containerscale` binary in router mode, run inside a throwaway namespace that stands for the
 * node (so the real host's links and routes stay untouched), across the CNI versions it speaks.
 */

const BIN = path.join(distBin(), "containerscale")
const scope = netnsScope()
const node = scope.create("node")
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-router-plugin-"))
afterAll(() => {
  scope.dispose()
  fs.rmSync(dataDir, { recursive: true, force: true })
})

const conf = (cniVersion: string, extra: Record<string, unknown> = {}) => ({
  cniVersion,
  name: "pods",
  type: "containerscale",
  mode: "router",
  ipam: { type: "containerscale-ipam", dataDir, ranges: [[{ subnet: "10.236.0.0/24" }]] },
  ...extra
})

const call = (command: PluginInvocation["command"], containerId: string, ctr: string | undefined, config: object) =>
  execPlugin(BIN, { command, containerId, netns: ctr === undefined ? "" : netnsPath(ctr), ifname: "eth0", path: "/opt/cni/bin", runIn: node }, config)

const ping = (from: string, to: string) =>
  execFileSync("ip", ["netns", "exec", from, "busybox", "ping", "-c", "1", "-W", "3", to], { stdio: "ignore" })

describe("containerscale router mode", () => {
  for (const version of ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]) {
    it(`ADD, CHECK, DEL, DEL again with cniVersion ${version}`, async () => {
      const ctr = scope.create(`v${version.replaceAll(".", "")}`)
      const id = `ctr-${version}`
      const add = await call("ADD", id, ctr, conf(version))
      assert.strictEqual(add.exitCode, 0, add.stdout + add.stderr)
      const result = add.json as any
      assert.strictEqual(result.cniVersion, version)
      assert.strictEqual(result.interfaces[1].name, "eth0")
      assert.strictEqual(result.interfaces[1].sandbox, netnsPath(ctr))
      assert.match(result.interfaces[1].mac, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/)
      assert.strictEqual(result.ips[0].interface, 1)
      assert.strictEqual(result.ips[0].version === "4", version < "1.0.0")
      ping(ctr, "10.236.0.1")
      if (version >= "0.4.0") {
        const check = await call("CHECK", id, ctr, conf(version, { prevResult: result }))
        assert.strictEqual(check.exitCode, 0, check.stdout)
      }
      const del = await call("DEL", id, ctr, conf(version, { prevResult: result }))
      assert.strictEqual(del.exitCode, 0, del.stdout)
      assert.deepStrictEqual(listLinks(node, "cs"), [])
      const again = await call("DEL", id, undefined, conf(version))
      assert.strictEqual(again.exitCode, 0, again.stdout)
      if (version >= "0.4.0") {
        const stale = await call("CHECK", id, ctr, conf(version, { prevResult: result }))
        assert.strictEqual((stale.json as any).code, 104)
      }
    })
  }

  it("two containers reach each other through the node", async () => {
    const [a, b] = [scope.create("a"), scope.create("b")]
    const ra = await call("ADD", "ca", a, conf("1.0.0"))
    const rb = await call("ADD", "cb", b, conf("1.0.0"))
    assert.strictEqual(ra.exitCode + rb.exitCode, 0, ra.stdout + rb.stdout)
    ping(a, (rb.json as any).ips[0].address.split("/")[0])
    await call("DEL", "ca", a, conf("1.0.0"))
    await call("DEL", "cb", b, conf("1.0.0"))
  })

  it("a failed ADD leaves no link and no address behind", async () => {
    const ctr = scope.create("busy")
    execFileSync("ip", ["-n", ctr, "tuntap", "add", "dev", "eth0", "mode", "tun"])
    const add = await call("ADD", "busy", ctr, conf("1.0.0"))
    assert.notStrictEqual(add.exitCode, 0)
    assert.strictEqual((add.json as any).code, 105)
    assert.deepStrictEqual(listLinks(node, "cs"), [])
    const gc = await call("GC", "", undefined, conf("1.1.0", { "cni.dev/valid-attachments": [] }))
    assert.strictEqual(gc.exitCode, 0, gc.stdout)
  })

  it("GC removes host ends and addresses of attachments not in the valid list", async () => {
    const [keep, drop] = [scope.create("keep"), scope.create("drop")]
    await call("ADD", "keep", keep, conf("1.1.0"))
    await call("ADD", "drop", drop, conf("1.1.0"))
    assert.strictEqual(listLinks(node, "cs").length, 2)
    const gc = await call("GC", "", undefined, conf("1.1.0", { "cni.dev/valid-attachments": [{ containerID: "keep", ifname: "eth0" }] }))
    assert.strictEqual(gc.exitCode, 0, gc.stdout)
    assert.strictEqual(listLinks(node, "cs").length, 1)
    const again = await call("ADD", "keep", keep, conf("1.1.0"))
    assert.notStrictEqual(again.exitCode, 0) // eth0 still exists in the kept container
    await call("DEL", "keep", keep, conf("1.1.0"))
    assert.deepStrictEqual(listLinks(node, "cs"), [])
  })

  it("rejects member mode and foreign IPAM types with a clear message, and STATUS says ready", async () => {
    const member = await call("ADD", "m", scope.create("m"), { ...conf("1.0.0"), mode: undefined })
    assert.strictEqual((member.json as any).code, 7)
    assert.include((member.json as any).msg, `"mode": "router"`)
    const status = await call("STATUS", "", undefined, conf("1.1.0"))
    assert.strictEqual(status.exitCode, 0, status.stdout)
  })

  it("delegates addresses to another IPAM plugin found through CNI_PATH (host-local)", async () => {
    const ctr = scope.create("hl")
    const hostLocal = fs.mkdtempSync(path.join(dataDir, "hl-"))
    const config = conf("1.0.0", { ipam: { type: "host-local", dataDir: hostLocal, ranges: [[{ subnet: "10.236.7.0/24" }]] } })
    const withPath = (command: PluginInvocation["command"], extra: object = {}) =>
      execPlugin(BIN, { command, containerId: "hl", netns: netnsPath(ctr), ifname: "eth0", path: "/usr/lib/cni", runIn: node }, { ...config, ...extra })
    const add = await withPath("ADD")
    assert.strictEqual(add.exitCode, 0, add.stdout + add.stderr)
    const result = add.json as any
    assert.strictEqual(result.ips[0].address, "10.236.7.2/24")
    assert.isTrue(fs.existsSync(path.join(hostLocal, "pods", "10.236.7.2")))
    ping(ctr, "10.236.7.1")
    const check = await withPath("CHECK", { prevResult: result })
    assert.strictEqual(check.exitCode, 0, check.stdout)
    const del = await withPath("DEL", { prevResult: result })
    assert.strictEqual(del.exitCode, 0, del.stdout)
    assert.isFalse(fs.existsSync(path.join(hostLocal, "pods", "10.236.7.2")))
    assert.deepStrictEqual(listLinks(node, "cs"), [])
    const missing = await execPlugin(
      BIN,
      { command: "ADD", containerId: "hl2", netns: netnsPath(ctr), ifname: "eth0", path: "/nowhere", runIn: node },
      config
    )
    assert.strictEqual((missing.json as any).code, 7)
    assert.include((missing.json as any).msg, "host-local")
    assert.deepStrictEqual(listLinks(node, "cs"), [])
  })
})

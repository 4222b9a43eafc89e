import { execPlugin, listLinks, netnsPath, netnsScope, type PluginInvocation } from "@containerscale/testing"
import { distBin } from "@containerscale/sandbox"
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

/** Every file under `dir` with its contents, to show a call changed nothing. */
const snapshot = (dir: string): Record<string, string> =>
  Object.fromEntries(
    (fs.readdirSync(dir, { recursive: true, withFileTypes: true }) as Array<fs.Dirent>)
      .filter((e) => e.isFile())
      .map((e) => {
        const file = path.join(e.parentPath, e.name)
        return [file, fs.readFileSync(file, "utf8")]
      })
  )

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
    assert.include((add.json as any).msg, "eth0 already exists in")
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
    assert.strictEqual((again.json as any).code, 106) // the kept attachment is still there
    assert.strictEqual(listLinks(node, "cs").length, 1)
    await call("DEL", "keep", keep, conf("1.1.0"))
    assert.deepStrictEqual(listLinks(node, "cs"), [])
  })

  it("a second ADD of the same attachment fails and leaves the first one working", async () => {
    const ctr = scope.create("twice")
    const first = await call("ADD", "twice", ctr, conf("1.0.0"))
    assert.strictEqual(first.exitCode, 0, first.stdout)
    const second = await call("ADD", "twice", ctr, conf("1.0.0"))
    assert.strictEqual((second.json as any).code, 106)
    assert.include((second.json as any).msg, "already attached")
    assert.strictEqual(listLinks(node, "cs").length, 1)
    ping(ctr, "10.236.0.1")
    const check = await call("CHECK", "twice", ctr, conf("1.0.0", { prevResult: first.json }))
    assert.strictEqual(check.exitCode, 0, check.stdout)
    await call("DEL", "twice", ctr, conf("1.0.0"))
    assert.deepStrictEqual(listLinks(node, "cs"), [])
  })

  it("refuses bad environments and configs with the spec's codes, changing nothing", async () => {
    const ctr = scope.create("bad")
    const good = conf("1.0.0")
    const cases: ReadonlyArray<{ what: string; invocation: Partial<PluginInvocation>; config: object | string; code: number; says: string }> = [
      { what: "no command", invocation: { command: "" as never }, config: good, code: 4, says: "CNI_COMMAND" },
      { what: "unknown command", invocation: { command: "UP" as never }, config: good, code: 4, says: "UP" },
      { what: "no container id", invocation: { containerId: "" }, config: good, code: 4, says: "CNI_CONTAINERID" },
      { what: "no netns", invocation: { netns: "" }, config: good, code: 4, says: "CNI_NETNS" },
      { what: "no ifname", invocation: { ifname: "" }, config: good, code: 4, says: "CNI_IFNAME" },
      { what: "ifname too long", invocation: { ifname: "eth0123456789abcdef" }, config: good, code: 4, says: "eth0123456789abcdef" },
      { what: "netns that does not exist", invocation: { netns: "/run/netns/cs-no-such-ns" }, config: good, code: 4, says: "/run/netns/cs-no-such-ns does not exist" },
      { what: "not JSON", invocation: {}, config: "{ not json", code: 6, says: "JSON" },
      { what: "old version", invocation: {}, config: conf("0.2.0"), code: 1, says: "0.2.0" },
      { what: "unknown version", invocation: {}, config: conf("9.9.9"), code: 1, says: "9.9.9" },
      { what: "unknown mode", invocation: {}, config: conf("1.0.0", { mode: "bridge" }), code: 7, says: "mode" },
      { what: "MTU too small", invocation: {}, config: conf("1.0.0", { mtu: 100 }), code: 7, says: "mtu" },
      { what: "no ipam", invocation: {}, config: conf("1.0.0", { ipam: undefined }), code: 7, says: "ipam" },
      {
        what: "bad subnet",
        invocation: {},
        config: conf("1.0.0", { ipam: { type: "containerscale-ipam", dataDir, ranges: [[{ subnet: "10.236.0.0/33" }]] } }),
        code: 7,
        says: "10.236.0.0/33"
      },
      { what: "no name", invocation: {}, config: { ...good, name: undefined }, code: 7, says: "name" }
    ]
    const before = snapshot(dataDir)
    for (const c of cases) {
      const out = await execPlugin(
        BIN,
        { command: "ADD", containerId: "bad", netns: netnsPath(ctr), ifname: "eth0", path: "/opt/cni/bin", runIn: node, ...c.invocation },
        c.config
      )
      assert.notStrictEqual(out.exitCode, 0, c.what)
      assert.strictEqual((out.json as any)?.code, c.code, `${c.what}: ${out.stdout}`)
      const { msg, details } = out.json as { msg: string; details?: string }
      assert.include(`${msg} ${details ?? ""}`, c.says, c.what)
      assert.deepStrictEqual(listLinks(node, "cs"), [], c.what)
      assert.deepStrictEqual(listLinks(ctr, "eth"), [], c.what)
    }
    assert.deepStrictEqual(snapshot(dataDir), before)
  })

  it("STATUS says what is missing when the tools it needs are not in PATH", async () => {
    const out = await execPlugin(BIN, { command: "STATUS", runIn: node, env: { PATH: "/nowhere" } }, conf("1.1.0"))
    assert.strictEqual((out.json as any).code, 50, out.stdout)
    assert.include((out.json as any).msg, "ip and nsenter not found")
  })

  it("without a mode a config is router mode, the default; one with member options is member mode (ContainerScale's configs)", async () => {
    const ctr = scope.create("m")
    const router = await call("ADD", "m", ctr, { ...conf("1.0.0"), mode: undefined })
    assert.strictEqual(router.exitCode, 0, router.stdout)
    assert.strictEqual((router.json as any).interfaces.length, 2)
    assert.strictEqual((await call("DEL", "m", ctr, { ...conf("1.0.0"), mode: undefined })).exitCode, 0)
    const noIpam = await call("ADD", "m", ctr, { ...conf("1.0.0"), mode: undefined, ipam: undefined })
    assert.strictEqual((noIpam.json as any).code, 7)
    assert.include((noIpam.json as any).msg, `router mode (the default) needs an "ipam" section`)
    assert.include((noIpam.json as any).msg, `for member mode, add "mode": "member"`)
    const member = await call("ADD", "m", ctr, { ...conf("1.0.0"), mode: undefined, loginServer: "https://headscale.example.com" })
    assert.strictEqual((member.json as any).code, 7)
    assert.include((member.json as any).msg, "member mode runs chained after an interface plugin")
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

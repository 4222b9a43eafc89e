import {
  netavarkNetwork,
  netavarkRuntime,
  netavarkSandbox,
  type NetavarkSandbox,
  netavarkSetupJson,
  distBin,
  testingBin
} from "@containerscale/sandbox"
import {
  listLinks,
  listNetns,
  netnsPath,
  netnsScope,
  processesWith,
  uniquePrefix
} from "@containerscale/testing"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"

/**
 * containerscale-netavark driven by the real netavark of a current release (Debian trixie's 1.14,
 * run through trixie's loader and libc; see `netavarkRuntime`), exactly as Podman 5 drives it:
 * `netavark --plugin-directory D setup <netns>` with the setup JSON on stdin. Netavark, and so our
 * plugin, runs inside a throwaway "node" namespace, so the host's links and routes stay untouched.
 */

const execFileAsync = promisify(execFile)
const DRIVER = "containerscale-netavark"
const PLUGIN = path.join(distBin(), "containerscale-netavark")
const TAILSCALED = path.join(testingBin(), "tailscaled")
const TESTNET = path.join(testingBin(), "containerscale-testnet")

const prefix = uniquePrefix()
const scope = netnsScope(`${prefix}-`)
const node = scope.create("node")
const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-nve2e-`))
const stateDir = path.join(dir, "state")
let nv: NetavarkSandbox | undefined

afterAll(() => {
  const errors: Array<unknown> = []
  const attempt = (f: () => void) => {
    try {
      f()
    } catch (e) {
      errors.push(e)
    }
  }
  attempt(() => nv?.dispose())
  attempt(() => scope.dispose())
  attempt(() => fs.rmSync(dir, { recursive: true, force: true }))
  if (errors.length > 0) throw new AggregateError(errors, "netavark e2e cleanup failed")
})

/** Async: the plugin's helpers and the testnet are other processes, the test must not block them. */
const ping = (from: string, to: string) => execFileAsync("ip", ["netns", "exec", from, "busybox", "ping", "-c", "1", "-W", "3", to])

const sandbox = (): NetavarkSandbox => {
  if (nv === undefined) throw new Error("the netavark sandbox was not set up")
  return nv
}

const stateFiles = (): Array<string> =>
  fs.existsSync(stateDir) ? (fs.readdirSync(stateDir, { recursive: true }) as Array<string>).filter((f) => fs.statSync(path.join(stateDir, f)).isFile()) : []

describe("containerscale-netavark through netavark 1.14", () => {
  beforeAll(() => {
    if (!fs.existsSync(PLUGIN)) {
      throw new Error(`${PLUGIN} is missing: build it with "cd packages/netavark && ../../scripts/compile-binary containerscale-netavark src/main.ts"`)
    }
    // the first run on a machine downloads netavark from the Debian archive (a few seconds)
    nv = netavarkSandbox({ prefix, plugins: { [DRIVER]: PLUGIN }, netns: node })
  }, 300_000)

  it("router mode: two containers on one network reach each other; teardown leaves no cs* link", async () => {
    const network = netavarkNetwork({
      name: `${prefix}-router`,
      driver: DRIVER,
      subnets: [{ subnet: "10.239.10.0/24", gateway: "10.239.10.1" }],
      options: { mode: "router", state_dir: stateDir }
    })
    const [a, b] = [scope.create("ra"), scope.create("rb")]
    const payloadA = netavarkSetupJson({ containerName: "web", attachments: [{ network, staticIps: ["10.239.10.2"], aliases: ["web"] }] })
    const payloadB = netavarkSetupJson({ containerName: "db", attachments: [{ network, staticIps: ["10.239.10.3"], aliases: ["db"] }] })
    try {
      const sa = await sandbox().setup(a, payloadA)
      assert.strictEqual(sa.code, 0, sa.stdout + sa.stderr)
      const sb = await sandbox().setup(b, payloadB)
      assert.strictEqual(sb.code, 0, sb.stdout + sb.stderr)
      // netavark prints {"<network>": StatusBlock}; the interface is the one asked for
      const block = (sa.json as any)[network.name]
      assert.isDefined(block, sa.stdout)
      assert.deepStrictEqual(Object.keys(block.interfaces), ["eth0"])
      assert.isString(block.interfaces.eth0.mac_address)
      assert.deepStrictEqual(block.interfaces.eth0.subnets.map((s: any) => s.ipnet), ["10.239.10.2/24"])
      assert.strictEqual(listLinks(node, "cs").length, 2)
      await ping(a, "10.239.10.3")
      await ping(b, "10.239.10.2")
    } finally {
      const ta = await sandbox().teardown(a, payloadA)
      const tb = await sandbox().teardown(b, payloadB)
      assert.strictEqual(ta.code, 0, ta.stdout + ta.stderr)
      assert.strictEqual(tb.code, 0, tb.stdout + tb.stderr)
    }
    assert.deepStrictEqual(listLinks(node, "cs"), [])
    assert.deepStrictEqual(listLinks(a, "eth0"), [])
    // a second teardown (podman's cleanup after a crash) is harmless
    const again = await sandbox().teardown(a, payloadA)
    assert.strictEqual(again.code, 0, again.stdout + again.stderr)
  }, 60_000)

  it("router mode: two setups at the same time on one network do not collide", async () => {
    const network = netavarkNetwork({
      name: `${prefix}-conc`,
      driver: DRIVER,
      subnets: [{ subnet: "10.239.11.0/24", gateway: "10.239.11.1" }],
      options: { mode: "router", state_dir: stateDir }
    })
    const ctrs = [scope.create("c1"), scope.create("c2"), scope.create("c3")]
    const payloads = ctrs.map((_, i) => netavarkSetupJson({ containerName: `c${i}`, attachments: [{ network, staticIps: [`10.239.11.${i + 2}`] }] }))
    try {
      const results = await Promise.all(ctrs.map((c, i) => sandbox().setup(c, payloads[i]!)))
      for (const r of results) assert.strictEqual(r.code, 0, r.stdout + r.stderr)
      assert.strictEqual(listLinks(node, "cs").length, 3)
      await ping(ctrs[0]!, "10.239.11.4")
      await ping(ctrs[2]!, "10.239.11.2")
    } finally {
      const down = await Promise.all(ctrs.map((c, i) => sandbox().teardown(c, payloads[i]!)))
      for (const r of down) assert.strictEqual(r.code, 0, r.stdout + r.stderr)
    }
    assert.deepStrictEqual(listLinks(node, "cs"), [])
  }, 60_000)

  it("when a later network of the same container fails, netavark tears ours down again", async () => {
    const good = netavarkNetwork({
      name: `${prefix}-n1`,
      driver: DRIVER,
      subnets: [{ subnet: "10.239.12.0/24", gateway: "10.239.12.1" }],
      options: { mode: "router", state_dir: stateDir }
    })
    // the second network's address is outside its subnet: our plugin refuses it after the first one is up
    const bad = netavarkNetwork({
      name: `${prefix}-n2`,
      driver: DRIVER,
      subnets: [{ subnet: "10.239.13.0/24", gateway: "10.239.13.1" }],
      options: { mode: "router", state_dir: stateDir }
    })
    const ctr = scope.create("multi")
    const payload = netavarkSetupJson({
      containerName: "multi",
      attachments: [{ network: good, staticIps: ["10.239.12.2"] }, { network: bad, staticIps: ["10.239.99.2"] }]
    })
    const r = await sandbox().setup(ctr, payload)
    assert.notStrictEqual(r.code, 0)
    assert.include((r.json as any)?.error, "10.239.99.2", r.stdout + r.stderr)
    assert.deepStrictEqual(listLinks(node, "cs"), [])
    assert.deepStrictEqual(listLinks(ctr, "eth"), [])
  }, 60_000)

  describe("member mode", () => {
    const testnetState = path.join(dir, "testnet")
    const keyFile = path.join(dir, "auth-key")
    let info: { loginServer: string; authKey: string; apiUrl: string; apiKey: string }
    const api = async (p: string) => {
      const res = await fetch(`${info.apiUrl}${p}`, { headers: { authorization: `Bearer ${info.apiKey}` } })
      assert.strictEqual(res.status, 200, `${p}: ${res.status}`)
      return (await res.json()) as any
    }
    /** Our tailscaled stand-ins (started for this file's state dir). */
    const daemons = () => processesWith(`--socket=${stateDir}`)

    beforeAll(async () => {
      const { stdout } = await execFileAsync(TESTNET, ["up", "--state", testnetState], { timeout: 30_000 })
      info = JSON.parse(stdout)
      fs.writeFileSync(keyFile, `${info.authKey}\n`, { mode: 0o600 })
    }, 60_000)

    afterAll(async () => {
      for (const pid of daemons()) process.kill(Number(pid), "SIGKILL")
      await execFileAsync(TESTNET, ["down", "--state", testnetState], { timeout: 30_000 })
    }, 60_000)

    it("each container joins the tailnet, reaches the other by its tailnet address, and logs out on teardown", async () => {
      const network = netavarkNetwork({
        name: `${prefix}-member`,
        driver: DRIVER,
        subnets: [{ subnet: "10.239.20.0/24", gateway: "10.239.20.1" }],
        options: {
          mode: "member",
          login_server: info.loginServer,
          auth_key_file: keyFile,
          tailscaled_path: TAILSCALED,
          state_dir: stateDir,
          timeout: "20"
        }
      })
      const [a, b] = [scope.create("ma"), scope.create("mb")]
      const payloadA = netavarkSetupJson({ containerName: "web", attachments: [{ network, staticIps: ["10.239.20.2"] }] })
      const payloadB = netavarkSetupJson({ containerName: "db", attachments: [{ network, staticIps: ["10.239.20.3"] }] })
      try {
        const sa = await sandbox().setup(a, payloadA, { env: {} })
        assert.strictEqual(sa.code, 0, sa.stdout + sa.stderr)
        const sb = await sandbox().setup(b, payloadB)
        assert.strictEqual(sb.code, 0, sb.stdout + sb.stderr)
        const tailnetIp = (r: any) => {
          const nets = Object.values((r as any)[network.name].interfaces as Record<string, any>).flatMap((i) => i.subnets ?? [])
          const ip = nets.map((s: any) => s.ipnet as string).find((n) => n.startsWith("100."))
          assert.isDefined(ip, JSON.stringify(r))
          return ip!.split("/")[0]!
        }
        const [ipA, ipB] = [tailnetIp(sa.json), tailnetIp(sb.json)]
        const { nodes } = await api("/api/v1/node")
        assert.strictEqual(nodes.length, 2, JSON.stringify(nodes))
        assert.sameMembers(nodes.flatMap((n: any) => n.ipAddresses ?? n.ip_addresses ?? []).filter((ip: string) => ip.startsWith("100.")), [ipA, ipB])
        await ping(a, ipB)
        await ping(b, ipA)
        // the key never reaches a command line or the plugin's output
        assert.notInclude(sa.stdout + sa.stderr + sb.stdout + sb.stderr, info.authKey)
      } finally {
        const ta = await sandbox().teardown(a, payloadA)
        const tb = await sandbox().teardown(b, payloadB)
        assert.strictEqual(ta.code, 0, ta.stdout + ta.stderr)
        assert.strictEqual(tb.code, 0, tb.stdout + tb.stderr)
      }
      const { nodes } = await api("/api/v1/node")
      assert.deepStrictEqual(nodes, []) // ephemeral nodes are deleted at logout
      assert.deepStrictEqual(daemons(), [])
      assert.deepStrictEqual(listLinks(node, "cs"), [])
    }, 120_000)
  })

  describe("bad input through netavark gives a clear error and leaves nothing behind", () => {
    const network = () =>
      netavarkNetwork({
        name: `${prefix}-bad`,
        driver: DRIVER,
        subnets: [{ subnet: "10.239.30.0/24", gateway: "10.239.30.1" }],
        options: { mode: "router", state_dir: stateDir }
      })
    /** no link in the node or the container, and no namespace beyond the ones this test made */
    const nothingLeft = (netnsBefore: Array<string>, ctr?: string) => {
      assert.deepStrictEqual(listLinks(node, "cs"), [])
      if (ctr !== undefined) assert.deepStrictEqual(listLinks(ctr, "eth"), [])
      assert.sameMembers(listNetns(prefix), netnsBefore)
    }

    it("malformed JSON", async () => {
      const ctr = scope.create("x1")
      const before = listNetns(prefix)
      const r = await sandbox().setup(ctr, {}, { stdin: "{ not json" })
      assert.notStrictEqual(r.code, 0)
      assert.match((r.json as any)?.error ?? r.stdout + r.stderr, /json|expected|key|parse/i)
      nothingLeft(before, ctr)
    })

    it("an unknown option is refused by the plugin, and netavark says which plugin", async () => {
      const ctr = scope.create("x2")
      const before = listNetns(prefix)
      const bad = { ...network(), options: { mode: "router", colour: "blue" } }
      const r = await sandbox().setup(ctr, netavarkSetupJson({ containerName: "bad", attachments: [{ network: bad, staticIps: ["10.239.30.2"] }] }))
      assert.notStrictEqual(r.code, 0)
      const error = (r.json as any)?.error as string
      assert.include(error, `plugin "${DRIVER}" failed`, r.stdout + r.stderr)
      assert.include(error, `unknown option "colour"`)
      nothingLeft(before, ctr)
    })

    it("a missing netns", async () => {
      const before = listNetns(prefix)
      const r = await sandbox().setup(
        netnsPath(`${prefix}-gone`),
        netavarkSetupJson({ containerName: "gone", attachments: [{ network: network(), staticIps: ["10.239.30.3"] }] })
      )
      assert.notStrictEqual(r.code, 0)
      assert.match((r.json as any)?.error ?? r.stdout + r.stderr, /netns|namespace|No such file/i)
      nothingLeft(before)
    })

    it("member mode with an unreadable auth key file", async () => {
      const ctr = scope.create("x3")
      const before = listNetns(prefix)
      const bad = { ...network(), options: { mode: "member", auth_key_file: path.join(dir, "no-such-key"), state_dir: stateDir } }
      const r = await sandbox().setup(ctr, netavarkSetupJson({ containerName: "nokey", attachments: [{ network: bad, staticIps: ["10.239.30.4"] }] }))
      assert.notStrictEqual(r.code, 0)
      assert.include((r.json as any)?.error, "no-such-key", r.stdout + r.stderr)
      nothingLeft(before, ctr)
      assert.deepStrictEqual(stateFiles().filter((f) => !f.includes("ipam") && !f.endsWith(".lock")), [])
    })
  })
})

describe("the trixie netavark runtime itself", () => {
  it("is netavark 1.14 from the cache, and runs netavark's own bridge driver in the node namespace", async () => {
    const rt = netavarkRuntime()
    assert.match(rt.version, /^1\.1[4-9]\./)
    const v = await rt.run(["--version"])
    assert.strictEqual(v.stdout.trim(), `netavark ${rt.version.split("-")[0]}`)
    const bridgeNv = netavarkSandbox({ prefix: `${prefix}b`, netns: node })
    const network = netavarkNetwork({
      name: `${prefix}-br`,
      driver: "bridge",
      networkInterface: `${prefix}br`.slice(0, 15),
      subnets: [{ subnet: "10.239.40.0/24", gateway: "10.239.40.1" }]
    })
    const [a, b] = [scope.create("ba"), scope.create("bb")]
    const pa = netavarkSetupJson({ containerName: "a", attachments: [{ network, staticIps: ["10.239.40.2"] }] })
    const pb = netavarkSetupJson({ containerName: "b", attachments: [{ network, staticIps: ["10.239.40.3"] }] })
    try {
      const sa = await bridgeNv.setup(a, pa)
      assert.strictEqual(sa.code, 0, sa.stdout + sa.stderr)
      const sb = await bridgeNv.setup(b, pb)
      assert.strictEqual(sb.code, 0, sb.stdout + sb.stderr)
      assert.deepStrictEqual((sa.json as any)[network.name].interfaces.eth0.subnets[0].ipnet, "10.239.40.2/24")
      await ping(a, "10.239.40.3")
    } finally {
      await bridgeNv.teardown(a, pa)
      await bridgeNv.teardown(b, pb)
      bridgeNv.dispose()
    }
    assert.deepStrictEqual(listLinks(node, prefix), [])
  }, 60_000)
})

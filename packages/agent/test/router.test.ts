import * as Log from "@containerscale/core/log"
import { makeLocalApi, maskPrefs, newPrefs } from "@containerscale/core/member"
import {
  execPlugin,
  netnsPath,
  netnsScope,
  type RunningTailscaled,
  startTailscaled,
  startTestnet,
  type Testnet
} from "@containerscale/testing"
import { distBin, tailscaledBinary } from "@containerscale/sandbox"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Fiber, Redacted } from "effect"
import { execFile, execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { runAgent } from "../src/agent.ts"
import type { AgentConfig } from "../src/config.ts"
import { reconcileRouter } from "../src/router.ts"
import { approverAt, forkWith, runWith } from "./services.ts"

/**
 * Router mode on the tailnet, end to end with the stand-ins: the node's tailscaled (in a
 * throwaway node namespace, TUN mode) advertises the pod CIDR, the Headscale API approves it for
 * this node only, and a peer on the tailnet reaches a pod on the node through it.
 */

const execFileAsync = promisify(execFile)

for (const version of ["0.29", "0.25"] as const) {
  const scope = netnsScope()
  const node = scope.create("node")
  const peerNs = scope.create("peer")
  const podNs = scope.create("pod")
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-agent-router-"))
  const stateDir = path.join(dir, "state")
  let testnet: Testnet
  const daemons: Array<RunningTailscaled> = []

  const up = async (netns: string, name: string, key: string, extra: Record<string, unknown> = {}) => {
    const socket = path.join(dir, `${name}.sock`)
    daemons.push(await startTailscaled({ binary: tailscaledBinary(), socket, state: path.join(dir, `${name}.state`), tun: "tailscale0", netns }))
    const api = makeLocalApi({ socket })
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      yield* api.start({ authKey: Redacted.make(key), updatePrefs: { ...newPrefs(), ControlURL: testnet.loginServer, Hostname: name, WantRunning: true, CorpDNS: false, ...extra } })
      yield* api.loginInteractive()
    })))
    for (let i = 0; i < 200; i++) {
      const s = await Effect.runPromise(api.status({ peers: false }))
      if (s.BackendState === "Running") return { socket, api, id: s.Self.ID }
      await new Promise((r) => setTimeout(r, 25))
    }
    throw new Error(`${name} never reached Running`)
  }

  let nodeD: Awaited<ReturnType<typeof up>>
  let peer: Awaited<ReturnType<typeof up>>
  let podIp = ""

  beforeAll(async () => {
    testnet = await startTestnet({ stateDir: path.join(dir, "testnet"), headscaleVersion: version })
    const key = await testnet.createAuthKey({ reusable: true })
    nodeD = await up(node, "node", key, { AdvertiseRoutes: ["192.168.77.0/24"] })
    peer = await up(peerNs, "peer", key, { AdvertiseRoutes: ["10.244.1.0/24"] })
    const add = await execPlugin(
      path.join(distBin(), "containerscale"),
      { command: "ADD", containerId: "pod1", netns: netnsPath(podNs), ifname: "eth0", runIn: node },
      { cniVersion: "1.0.0", name: "pods", type: "containerscale", mode: "router", ipam: { type: "containerscale-ipam", dataDir: path.join(dir, "ipam"), ranges: [[{ subnet: "10.244.1.0/24" }]] } }
    )
    assert.strictEqual(add.exitCode, 0, add.stdout)
    podIp = (add.json as any).ips[0].address.split("/")[0]
    // what `--accept-routes` does on a real peer: the pod CIDR through tailscale0
    execFileSync("ip", ["-n", peerNs, "route", "add", "10.244.0.0/16", "dev", "tailscale0"])
  })

  afterAll(async () => {
    for (const d of daemons) await d.stop("SIGKILL")
    await testnet?.close()
    scope.dispose()
    fs.rmSync(dir, { recursive: true, force: true })
  })

  const approver = () => approverAt(testnet.apiUrl, testnet.apiKey)
  const pass = (podCidrs: ReadonlyArray<string>, log = Log.memory()) => runWith(reconcileRouter(routerOf(podCidrs)), log)
  const routerOf = (podCidrs: ReadonlyArray<string>) => ({
    stateDir, socket: nodeD.socket, podCidrs: Effect.succeed(podCidrs), approver: approver(), nodeNetns: netnsPath(node)
  })
  const nodeOf = (id: string) => testnet.nodes().find((n) => String(n.id) === id)!

  describe(`router mode on the tailnet, Headscale ${version}`, () => {
    it("advertises the pod CIDR next to the node's other routes and approves it for this node only", async () => {
      const report = await pass(["10.244.1.0/24"])
      assert.isTrue(report.ok, report.reason)
      assert.deepStrictEqual(report.added, ["10.244.1.0/24"])
      const prefs = await Effect.runPromise(nodeD.api.prefs())
      assert.deepStrictEqual(prefs.AdvertiseRoutes, ["192.168.77.0/24", "10.244.1.0/24"])
      assert.deepStrictEqual(nodeOf(nodeD.id).approvedRoutes, ["10.244.1.0/24"])
      assert.deepStrictEqual(nodeOf(peer.id).approvedRoutes, []) // the peer advertises the same prefix: untouched
      assert.deepStrictEqual(report.serving, ["10.244.1.0/24"])
      const again = await pass(["10.244.1.0/24"])
      assert.deepStrictEqual([again.added, again.removed], [[], []])
    })

    it("a peer on the tailnet reaches a pod on the node through it", async () => {
      assert.strictEqual(execFileSync("ip", ["netns", "exec", node, "sysctl", "-n", "net.ipv4.ip_forward"], { encoding: "utf8" }).trim(), "1")
      await execFileAsync("ip", ["netns", "exec", peerNs, "busybox", "ping", "-c", "1", "-W", "3", podIp])
    })

    it("a changed pod CIDR replaces the old one and keeps the node's other routes", async () => {
      const report = await pass(["10.244.2.0/24"])
      assert.deepStrictEqual([report.added, report.removed], [["10.244.2.0/24"], ["10.244.1.0/24"]])
      const prefs = await Effect.runPromise(nodeD.api.prefs())
      assert.deepStrictEqual(prefs.AdvertiseRoutes, ["192.168.77.0/24", "10.244.2.0/24"])
      assert.include(nodeOf(nodeD.id).approvedRoutes, "10.244.2.0/24")
      await pass(["10.244.1.0/24"])
    })

    it("stopping the agent leaves tailscaled and the routes in place: pods stay reachable", async () => {
      const log = Log.memory()
      const config: AgentConfig = {
        stateDir, metricsAddress: "127.0.0.1:0", cniConfDir: path.join(dir, "net.d"), logLevel: "debug", logFile: undefined, podCidrs: ["10.244.1.0/24"],
        serviceCidrs: [], nodePrefs: "manage", kubernetesNode: undefined, tailscaledSocket: nodeD.socket, routerIntervalSeconds: 1, headscale: undefined,
        superviseSeconds: 1, gcSeconds: 300
      }
      const fiber = forkWith(runAgent({ config, env: {}, state: { checks: new Map() }, approver: approver(), nodeNetns: netnsPath(node) }), log)
      for (let i = 0; i < 100 && !log.lines.some((l) => l.msg === "router reconciled"); i++) await new Promise((r) => setTimeout(r, 25))
      await Effect.runPromise(Fiber.interrupt(fiber))
      assert.isTrue(log.lines.some((l) => l.msg === "router reconciled" && l.ok === true))
      const status = await Effect.runPromise(nodeD.api.status({ peers: false }))
      assert.strictEqual(status.BackendState, "Running")
      assert.include((await Effect.runPromise(nodeD.api.prefs())).AdvertiseRoutes, "10.244.1.0/24")
      assert.include(nodeOf(nodeD.id).approvedRoutes, "10.244.1.0/24")
      await execFileAsync("ip", ["netns", "exec", peerNs, "busybox", "ping", "-c", "1", "-W", "3", podIp])
    })

    it("repairs the routes at once when the node's tailscaled comes back to Running without them", async () => {
      const log = Log.memory()
      const config: AgentConfig = {
        stateDir, metricsAddress: "127.0.0.1:0", cniConfDir: path.join(dir, "net.d"), logLevel: "debug", logFile: undefined,
        podCidrs: ["10.244.1.0/24"], serviceCidrs: [], nodePrefs: "manage", kubernetesNode: undefined, tailscaledSocket: nodeD.socket, routerIntervalSeconds: 3600,
        headscale: undefined, superviseSeconds: 3600, gcSeconds: 3600
      }
      const fiber = forkWith(runAgent({ config, env: {}, state: { checks: new Map() }, approver: approver(), nodeNetns: netnsPath(node) }), log)
      const passes = () => log.lines.filter((l) => l.msg === "router reconciled").length
      for (let i = 0; i < 200 && passes() === 0; i++) await new Promise((r) => setTimeout(r, 25))
      // a new login with other prefs: the pod CIDR is gone, then the node is Running again
      await Effect.runPromise(nodeD.api.editPrefs(maskPrefs({ AdvertiseRoutes: ["192.168.77.0/24"], WantRunning: false })))
      await Effect.runPromise(nodeD.api.editPrefs(maskPrefs({ WantRunning: true })))
      let prefs = await Effect.runPromise(nodeD.api.prefs())
      for (let i = 0; i < 200 && !(prefs.AdvertiseRoutes ?? []).includes("10.244.1.0/24"); i++) {
        await new Promise((r) => setTimeout(r, 25))
        prefs = await Effect.runPromise(nodeD.api.prefs())
      }
      for (let i = 0; i < 200 && passes() < 2; i++) await new Promise((r) => setTimeout(r, 25))
      await Effect.runPromise(Fiber.interrupt(fiber))
      assert.deepStrictEqual(prefs.AdvertiseRoutes, ["192.168.77.0/24", "10.244.1.0/24"])
      assert.isAtLeast(passes(), 2) // woken by the bus: the interval is an hour
    })

    it("says what is wrong when the API key is wrong, and changes nothing at the control plane", async () => {
      // the test before turned the node off and on: a pass before it is Running again asks no approval at all
      for (let i = 0; i < 400 && (await Effect.runPromise(nodeD.api.status({ peers: false }))).BackendState !== "Running"; i++) {
        await new Promise((r) => setTimeout(r, 25))
      }
      const bad = approverAt(testnet.apiUrl, "hskey-api-wrong-key")
      const result = await runWith(Effect.result(reconcileRouter({ ...routerOf(["10.244.3.0/24"]), approver: bad })))
      assert.strictEqual(result._tag, "Failure")
      assert.match((result as any).failure.message, /API key/i)
      assert.notInclude((result as any).failure.message, "hskey-api-wrong-key")
      assert.notInclude(nodeOf(nodeD.id).approvedRoutes, "10.244.3.0/24")
      await pass(["10.244.1.0/24"])
    })

    it("says what is wrong when Headscale cannot be reached", async () => {
      const away = approverAt("http://127.0.0.1:1", testnet.apiKey)
      const result = await runWith(Effect.result(reconcileRouter({ ...routerOf(["10.244.1.0/24"]), approver: away })))
      assert.strictEqual(result._tag, "Failure")
      assert.include((result as any).failure.message, "127.0.0.1:1")
      assert.notInclude((result as any).failure.message, testnet.apiKey)
      assert.include(nodeOf(nodeD.id).approvedRoutes, "10.244.1.0/24") // what was approved stays
    })

    it("says what is wrong when the node's tailscaled socket is missing", async () => {
      const result = await runWith(Effect.result(reconcileRouter({ ...routerOf(["10.244.1.0/24"]), socket: path.join(dir, "nothing.sock") })))
      assert.strictEqual(result._tag, "Failure")
      assert.include((result as any).failure.message, "nothing.sock")
    })
  })
}

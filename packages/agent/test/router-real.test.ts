import * as Log from "@containerscale/core/log"
import {
  type RealHeadscale,
  type RealNode,
  type RealTailnet,
  startRealTailnet,
  type TailnetHost,
  distBin
} from "@containerscale/sandbox"
import { execPlugin, netnsPath, waitUntil } from "@containerscale/testing"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { execFile, execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { runAgent } from "../src/agent.ts"
import type { AgentConfig } from "../src/config.ts"
import { reconcileRouter, type RouterReport } from "../src/router.ts"
import { approverAt, forkWith, runWith } from "./services.ts"

/**
 * Router mode through the agent on a real tailnet: real Headscale (0.29 and 0.25), real DERP, real
 * tailscaled on the node (TUN mode), on a peer that accepts routes and on another node that
 * advertises routes of its own. A pod is attached to the node by the `containerscale` CNI plugin in
 * router mode; the agent advertises and approves the pod CIDR, and the peer reaches the pod.
 */

const execFileAsync = promisify(execFile)

const POD_CIDR = "10.244.1.0/24"
const NEW_POD_CIDR = "10.244.2.0/24"
const NODE_ROUTE = "192.168.77.0/24"
const OTHER_ROUTE = "192.168.88.0/24"
const EXTRA_POD_CIDR = "10.244.3.0/24"

const TEST_TIMEOUT = 300_000


/** Retries `f` until it returns without throwing (an assertion, say), with its value. */
const eventually = <A>(what: string, f: () => Promise<A>, timeoutMs = 120_000): Promise<A> =>
  waitUntil(what, async () => ({ value: await f() }), timeoutMs).then((r) => r.value)

/** What Headscale itself shows for one node's routes, from its CLI (not through our client). */
interface ShownRoutes {
  readonly advertised: ReadonlyArray<string>
  readonly approved: ReadonlyArray<string>
  readonly serving: ReadonlyArray<string>
}

const sorted = (xs: ReadonlyArray<string> | undefined) => [...(xs ?? [])].sort()

for (const generation of ["current", "0.25"] as const satisfies ReadonlyArray<RealHeadscale>) {
  describe(`router mode through the agent on the real tailnet, Headscale ${generation}`, () => {
    let dir = ""
    let stateDir = ""
    const fibers: Array<Fiber.Fiber<unknown, unknown>> = []
    let tailnet: RealTailnet
    let nodeHost: TailnetHost
    let peerHost: TailnetHost
    let node: RealNode
    let peer: RealNode
    let other: RealNode
    let apiKey: string
    let nodeId: string
    let otherId: string
    const pods: Record<string, string> = {}
    const apiGeneration = generation === "0.25" ? "legacy" : "0.26+"

    const routesShown = async (id: string): Promise<ShownRoutes> => {
      if (generation === "0.25") {
        const rows = ((await tailnet.headscale(["routes", "list"], true)) ?? []) as Array<{
          node?: { id?: number | string }
          prefix: string
          advertised?: boolean
          enabled?: boolean
          is_primary?: boolean
        }>
        const mine = rows.filter((r) => String(r.node?.id) === id)
        return {
          advertised: sorted(mine.filter((r) => r.advertised === true).map((r) => r.prefix)),
          approved: sorted(mine.filter((r) => r.enabled === true).map((r) => r.prefix)),
          serving: sorted(mine.filter((r) => r.enabled === true && r.is_primary === true).map((r) => r.prefix))
        }
      }
      const found = (await tailnet.nodes()).find((n) => String(n.id) === id)
      if (found === undefined) throw new Error(`headscale nodes list has no node ${id}`)
      return { advertised: sorted(found.available_routes), approved: sorted(found.approved_routes), serving: sorted(found.subnet_routes) }
    }

    const prefsOf = async (n: RealNode): Promise<{ AdvertiseRoutes?: Array<string> | null }> => JSON.parse(await n.cli(["debug", "prefs"]))

    const ipForward = (netns: string) =>
      execFileSync("ip", ["netns", "exec", netns, "sysctl", "-n", "net.ipv4.ip_forward"], { encoding: "utf8" }).trim()

    const peerSeesNodeServing = async () => {
      const peers = Object.values((await peer.status()).Peer ?? {}) as Array<{ ID: string; PrimaryRoutes?: Array<string> }>
      return sorted(peers.find((p) => p.ID === nodeId)?.PrimaryRoutes)
    }

    /** One ping from the peer, bound to its tailscale0: it cannot take the hub bridge. */
    const pingOverTailnet = (ip: string) =>
      execFileAsync("ip", ["netns", "exec", peerHost.netns, "busybox", "ping", "-c", "1", "-W", "3", "-I", "tailscale0", ip])

    const approver = () => approverAt(tailnet.apiUrl, apiKey)

    const passOf = (podCidrs: ReadonlyArray<string>, approve = approver()) =>
      reconcileRouter({
        stateDir,
        socket: node.socket,
        podCidrs: Effect.succeed(podCidrs),
        approver: approve,
        nodeNetns: netnsPath(nodeHost.netns)
      })
    const pass = (podCidrs: ReadonlyArray<string>, log = Log.memory()): Promise<RouterReport> => runWith(passOf(podCidrs), log)

    const agentConfig = (podCidrs: ReadonlyArray<string>): AgentConfig => ({
      stateDir,
      metricsAddress: "127.0.0.1:0",
      cniConfDir: path.join(dir, "net.d"),
      logLevel: "debug",
      logFile: undefined,
      podCidrs,
      serviceCidrs: [],
      nodePrefs: "manage",
      kubernetesNode: undefined,
      tailscaledSocket: node.socket,
      routerIntervalSeconds: 2,
      headscale: undefined,
      superviseSeconds: 3600,
      gcSeconds: 3600
    })

    const startAgent = (podCidrs: ReadonlyArray<string>) => {
      const log = Log.memory()
      const fiber = forkWith(runAgent({
        config: agentConfig(podCidrs),
        env: {},
        state: { checks: new Map() },
        approver: approver(),
        nodeNetns: netnsPath(nodeHost.netns)
      }), log)
      fibers.push(fiber)
      const reconciled = () => log.lines.filter((l) => l.msg === "router reconciled")
      return {
        log,
        reconciled,
        /** waits for a served pass after the `after`-th one */
        servedPass: (after = 0) =>
          eventually("the agent reconciling with the route served", async () => {
            const served = reconciled().slice(after).find((l) => l.ok === true)
            if (served === undefined) throw new Error(JSON.stringify(log.lines.slice(-5)))
            return served
          }),
        stop: () => Effect.runPromise(Fiber.interrupt(fiber))
      }
    }

    const attachPod = async (name: string, cidr: string) => {
      const netns = tailnet.scope.create(name)
      const add = await execPlugin(
        path.join(distBin(), "containerscale"),
        { command: "ADD", containerId: name, netns: netnsPath(netns), ifname: "eth0", runIn: nodeHost.netns },
        {
          cniVersion: "1.0.0",
          name: `pods-${name}`,
          type: "containerscale",
          mode: "router",
          ipam: { type: "containerscale-ipam", dataDir: path.join(dir, "ipam"), ranges: [[{ subnet: cidr }]] }
        }
      )
      assert.strictEqual(add.exitCode, 0, `${add.stdout}${add.stderr}`)
      pods[name] = (add.json as { ips: Array<{ address: string }> }).ips[0]!.address.split("/")[0]!
      return pods[name]
    }

    beforeAll(async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-router-real-"))
      stateDir = path.join(dir, "state")
      tailnet = await startRealTailnet({ headscale: generation })
      const user = await tailnet.createUser("routers")
      const key = await tailnet.createAuthKey({ user, reusable: true })
      nodeHost = tailnet.addHost("node", { routedSubnets: [POD_CIDR, NEW_POD_CIDR] })
      peerHost = tailnet.addHost("peer")
      const otherHost = tailnet.addHost("other")
      ;[node, peer, other] = await Promise.all([
        tailnet.startNode("node", { host: nodeHost, authKey: key.key, advertiseRoutes: [NODE_ROUTE] }),
        tailnet.startNode("peer", { host: peerHost, authKey: key.key, acceptRoutes: true }),
        tailnet.startNode("other", { host: otherHost, authKey: key.key, advertiseRoutes: [POD_CIDR, OTHER_ROUTE] })
      ])
      nodeId = (await node.status()).Self.ID
      otherId = (await other.status()).Self.ID
      apiKey = await tailnet.createApiKey()
      await attachPod("pod1", POD_CIDR)
    }, 900_000)

    afterAll(async () => {
      for (const fiber of fibers) await Effect.runPromise(Fiber.interrupt(fiber))
      await tailnet?.close()
      if (dir !== "") fs.rmSync(dir, { recursive: true, force: true })
    }, 120_000)

    it("advertises the pod CIDR next to the node's other routes and approves it for this node only", async () => {
      const hostForwarding = fs.readFileSync("/proc/sys/net/ipv4/ip_forward", "utf8").trim()
      // the routed host and the CNI plugin turned it on: off, so the agent has to
      execFileSync("ip", ["netns", "exec", nodeHost.netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
      const log = Log.memory()
      const first = await pass([POD_CIDR], log)
      assert.deepStrictEqual([first.added, first.removed], [[POD_CIDR], []])
      assert.deepStrictEqual(first.advertised, [NODE_ROUTE, POD_CIDR])
      assert.strictEqual(first.approval, `approved ${POD_CIDR} for node ${nodeId} at Headscale ${apiGeneration}`)
      // Headscale 0.29 applies an approval at its next batch tick: a pass may find it pending
      const served = first.ok ? first : await eventually("the node serving the pod CIDR", async () => {
        const report = await pass([POD_CIDR], log)
        if (!report.ok) throw new Error(report.reason)
        return report
      })
      assert.deepStrictEqual(served.serving, [POD_CIDR])

      assert.deepStrictEqual((await prefsOf(node)).AdvertiseRoutes, [NODE_ROUTE, POD_CIDR])
      assert.strictEqual(ipForward(nodeHost.netns), "1")
      assert.strictEqual(fs.readFileSync("/proc/sys/net/ipv4/ip_forward", "utf8").trim(), hostForwarding)

      const listed = (await tailnet.nodes()).filter((n) => n.name === "node")
      assert.deepStrictEqual(listed.map((n) => String(n.id)), [nodeId])
      const shown = await eventually("Headscale showing the node's routes", async () => {
        const routes = await routesShown(nodeId)
        assert.deepStrictEqual(routes.advertised, sorted([NODE_ROUTE, POD_CIDR]))
        return routes
      })
      assert.deepStrictEqual(shown.approved, [POD_CIDR]) // the node's other route is left to the operator
      assert.deepStrictEqual(shown.serving, [POD_CIDR])
      const otherShown = await routesShown(otherId)
      assert.deepStrictEqual(otherShown.advertised, sorted([POD_CIDR, OTHER_ROUTE]))
      assert.deepStrictEqual([otherShown.approved, otherShown.serving], [[], []])

      const again = await pass([POD_CIDR], log)
      assert.deepStrictEqual([again.ok, again.added, again.removed], [true, [], []])
      assert.notInclude(JSON.stringify(log.lines), apiKey)
    }, TEST_TIMEOUT)

    it("a peer that accepts routes pings the pod behind the node over the real tailnet", async () => {
      await eventually("the peer learning the node's route", async () => assert.deepStrictEqual(await peerSeesNodeServing(), [POD_CIDR]))
      const { stdout: route } = await execFileAsync("ip", ["-n", peerHost.netns, "route", "get", pods["pod1"]!])
      assert.include(route, "dev tailscale0")
      const { stdout } = await eventually("a ping from the peer to the pod", () => pingOverTailnet(pods["pod1"]!))
      assert.match(stdout, /1 packets received/)
    }, TEST_TIMEOUT)

    it("a changed pod CIDR replaces the old one: no longer advertised nor approved, and the new one works", async () => {
      const pod2 = await attachPod("pod2", NEW_POD_CIDR)
      const first = await pass([NEW_POD_CIDR])
      assert.deepStrictEqual([first.added, first.removed], [[NEW_POD_CIDR], [POD_CIDR]])
      assert.strictEqual(first.approval, `approved ${NEW_POD_CIDR} for node ${nodeId} at Headscale ${apiGeneration}`)
      // 0.25 disables the row itself once the node stops announcing it, and may be first
      assert.oneOf(first.withdrawal, [
        `took back ${POD_CIDR} from node ${nodeId} at Headscale ${apiGeneration}`,
        ...(generation === "0.25" ? [`not approved at Headscale legacy: ${POD_CIDR}`] : [])
      ])
      await eventually("the node serving the new pod CIDR", async () => {
        const report = await pass([NEW_POD_CIDR])
        if (!report.ok) throw new Error(report.reason)
        assert.deepStrictEqual(report.serving, [NEW_POD_CIDR])
      })
      assert.deepStrictEqual((await prefsOf(node)).AdvertiseRoutes, [NODE_ROUTE, NEW_POD_CIDR])
      await eventually("Headscale dropping the old pod CIDR", async () => {
        const routes = await routesShown(nodeId)
        assert.deepStrictEqual(routes.advertised, sorted([NODE_ROUTE, NEW_POD_CIDR]))
        assert.deepStrictEqual(routes.approved, [NEW_POD_CIDR])
        assert.deepStrictEqual(routes.serving, [NEW_POD_CIDR])
      })
      assert.deepStrictEqual((await routesShown(otherId)).approved, [])

      await eventually("the peer learning the new route", async () => assert.deepStrictEqual(await peerSeesNodeServing(), [NEW_POD_CIDR]))
      await eventually("a ping from the peer to the new pod", () => pingOverTailnet(pod2))
      const old = await pingOverTailnet(pods["pod1"]!).then(() => "answered", (e: { stdout?: string }) => e.stdout ?? "failed")
      assert.match(old, /0 packets received|failed/)
    }, TEST_TIMEOUT)

    it("an agent restart keeps the route served", async () => {
      const first = startAgent([NEW_POD_CIDR])
      const served = await first.servedPass()
      assert.deepStrictEqual([served.added, served.removed, served.serving], [[], [], [NEW_POD_CIDR]])
      await first.stop()
      await eventually("a ping from the peer to the pod with the agent stopped", () => pingOverTailnet(pods["pod2"]!), 30_000)

      const second = startAgent([NEW_POD_CIDR])
      const again = await second.servedPass()
      assert.deepStrictEqual([again.added, again.removed, again.serving], [[], [], [NEW_POD_CIDR]])
      await eventually("a ping from the peer to the pod with the agent started again", () => pingOverTailnet(pods["pod2"]!), 30_000)
      await second.stop()
      assert.deepStrictEqual((await routesShown(nodeId)).approved, [NEW_POD_CIDR])
      assert.notInclude(JSON.stringify([...first.log.lines, ...second.log.lines]), apiKey)
    }, TEST_TIMEOUT)

    it("a tailscaled restart keeps the route served, with the agent running", async () => {
      const agent = startAgent([NEW_POD_CIDR])
      await agent.servedPass()
      const oldPid = node.pid
      node = await node.restart()
      const before = agent.reconciled().length
      assert.notStrictEqual(node.pid, oldPid)
      await eventually("the node's tailscaled Running again", async () => assert.strictEqual((await node.status()).BackendState, "Running"))
      const after = await agent.servedPass(before)
      assert.deepStrictEqual(after.serving, [NEW_POD_CIDR])
      assert.deepStrictEqual((await prefsOf(node)).AdvertiseRoutes, [NODE_ROUTE, NEW_POD_CIDR])
      await eventually("the peer learning the route again", async () => assert.deepStrictEqual(await peerSeesNodeServing(), [NEW_POD_CIDR]))
      await eventually("a ping from the peer to the pod after the restart", () => pingOverTailnet(pods["pod2"]!))
      await agent.stop()
      assert.deepStrictEqual((await routesShown(nodeId)).approved, [NEW_POD_CIDR])
      assert.strictEqual(ipForward(nodeHost.netns), "1")
    }, TEST_TIMEOUT)

    it("says that the API key is wrong, approves nothing, and a later pass with the right key undoes what it advertised", async () => {
      const wrongKey = "hskey-api-wrongprefix-wrongsecretwrongsecretwrongsecret"
      const log = Log.memory()
      const wrong = approverAt(tailnet.apiUrl, wrongKey)
      const result = await runWith(Effect.result(passOf([NEW_POD_CIDR, EXTRA_POD_CIDR], wrong)), log)
      assert.strictEqual(result._tag, "Failure")
      const message = result._tag === "Failure" ? result.failure.message : ""
      assert.match(message, /API key/i)
      assert.notInclude(message, wrongKey)
      assert.notInclude(JSON.stringify(log.lines), wrongKey)
      assert.deepStrictEqual((await prefsOf(node)).AdvertiseRoutes, [NODE_ROUTE, NEW_POD_CIDR, EXTRA_POD_CIDR])
      await eventually("Headscale seeing the extra route advertised", async () =>
        assert.include((await routesShown(nodeId)).advertised, EXTRA_POD_CIDR))
      assert.deepStrictEqual((await routesShown(nodeId)).approved, [NEW_POD_CIDR])
      await eventually("a ping from the peer to the pod after the failed pass", () => pingOverTailnet(pods["pod2"]!), 30_000)

      const fixed = await pass([NEW_POD_CIDR])
      assert.deepStrictEqual([fixed.ok, fixed.added, fixed.removed], [true, [], [EXTRA_POD_CIDR]])
      assert.deepStrictEqual((await prefsOf(node)).AdvertiseRoutes, [NODE_ROUTE, NEW_POD_CIDR])
      await eventually("Headscale dropping the extra route", async () => {
        const routes = await routesShown(nodeId)
        assert.deepStrictEqual([routes.advertised, routes.approved], [sorted([NODE_ROUTE, NEW_POD_CIDR]), [NEW_POD_CIDR]])
      })
    }, TEST_TIMEOUT)
  })
}

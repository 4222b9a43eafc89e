import {
  attachRouter,
  detachRouter,
  hostInterfaceName,
  Ipam,
  type Lease,
  layerIproute2,
  Netlink,
  NetlinkFailure,
  parseHostInterfaceAlias,
  resolvePool,
  Router
} from "@containerscale/core"
import { netnsPath, netnsScope } from "@containerscale/testing"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Result } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

/** Router mode on real namespaces: a throwaway node and two containers on a dual-stack pool. */

const scope = netnsScope()
const node = netnsPath(scope.create("node"))
const c1 = netnsPath(scope.create("c1"))
const c2 = netnsPath(scope.create("c2"))
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-router-"))
afterAll(() => {
  scope.dispose()
  fs.rmSync(dataDir, { recursive: true, force: true })
})

const pool = Result.getOrThrow(resolvePool({ ranges: [[{ subnet: "10.237.0.0/24" }], [{ subnet: "fd00:237::/64" }]] }))
const layer = Layer.mergeAll(layerIproute2, Ipam.layer({ dataDir }))
const run = <A, E>(effect: Effect.Effect<A, E, Ipam | Netlink>) => Effect.provide(effect, layer)
const base = { network: "pods", pool, nodeNetns: node, ifname: "eth0" }
const ping = (from: string, to: string) =>
  execFileSync("nsenter", [`--net=${from}`, "busybox", to.includes(":") ? "ping6" : "ping", "-c", "1", "-W", "3", to], { stdio: "ignore" })

describe("router mode attach and detach", () => {
  it("names the host end stably, within IFNAMSIZ", () => {
    const name = hostInterfaceName("a".repeat(64), "eth0")
    assert.strictEqual(name, hostInterfaceName("a".repeat(64), "eth0"))
    assert.notStrictEqual(name, hostInterfaceName("a".repeat(64), "eth1"))
    assert.isAtMost(name.length, 15)
  })

  it.effect("gives each container an address and routes, so containers reach the node and each other", () =>
    run(Effect.gen(function*() {
      const a = yield* attachRouter({ ...base, containerId: "c1", netns: c1 })
      const b = yield* attachRouter({ ...base, containerId: "c2", netns: c2 })
      assert.deepStrictEqual(a.leases.map((l) => l.address), ["10.237.0.2/24", "fd00:237::2/64"])
      assert.deepStrictEqual(a.routes, [{ dst: "0.0.0.0/0", gw: "10.237.0.1" }, { dst: "::/0", gw: "fd00:237::1" }])
      assert.strictEqual(a.container.name, "eth0")
      assert.strictEqual(a.container.mtu, 1280)
      const nl = yield* Netlink
      const inside = yield* nl.addresses("eth0", c1)
      assert.isTrue(inside.some((x) => x.ip === "10.237.0.2" && x.prefix === 24))
      const nodeRoutes = yield* nl.routes(4, node)
      assert.isTrue(nodeRoutes.some((r) => r.dst === "10.237.0.3" && r.dev === b.host.name))
      ping(c1, "10.237.0.1")
      ping(c1, "10.237.0.3")
      ping(c2, "fd00:237::2")
    })))

  it.effect("detaches idempotently: links, routes and addresses go, also without the container's namespace", () =>
    run(Effect.gen(function*() {
      const nl = yield* Netlink
      const ipam = yield* Ipam
      yield* detachRouter({ ...base, containerId: "c1" })
      yield* detachRouter({ ...base, containerId: "c1" })
      assert.isUndefined(yield* nl.link(hostInterfaceName("c1", "eth0"), node))
      assert.isUndefined(yield* nl.link("eth0", c1))
      assert.isFalse((yield* nl.routes(4, node)).some((r) => r.dst === "10.237.0.2"))
      assert.deepStrictEqual(yield* ipam.leases({ network: "pods", pool, containerId: "c1", ifname: "eth0" }), [])
      yield* detachRouter({ ...base, containerId: "c2" })
      assert.strictEqual((yield* ipam.usage({ network: "pods", pool }))[0]!.used, 0)
    })))

  it.effect("undoes a failed attach: no host link and no address left behind", () =>
    run(Effect.gen(function*() {
      const nl = yield* Netlink
      const ipam = yield* Ipam
      yield* nl.createTun("eth0", c1) // the interface name is taken inside the container
      const error = yield* Effect.flip(attachRouter({ ...base, containerId: "c3", netns: c1 }))
      assert.instanceOf(error, NetlinkFailure)
      assert.isUndefined(yield* nl.link(hostInterfaceName("c3", "eth0"), node))
      assert.deepStrictEqual(yield* ipam.leases({ network: "pods", pool, containerId: "c3", ifname: "eth0" }), [])
      assert.isTrue(yield* nl.deleteLink("eth0", c1))
    })))

  it.effect("a container id of 300 characters attaches (its alias holds the id's hash, within IFALIASZ), and GC matches it", () =>
    run(Effect.gen(function*() {
      const nl = yield* Netlink
      const ctr = netnsPath(scope.create("long"))
      const id = "L".repeat(300)
      const a = yield* attachRouter({ ...base, containerId: id, netns: ctr })
      const alias = (yield* nl.link(a.host.name, node))?.alias ?? ""
      assert.isAtMost(Buffer.byteLength(alias), 255)
      assert.deepInclude(parseHostInterfaceAlias(alias), { runtime: "cni", network: "pods", ifname: "eth0" })
      assert.deepStrictEqual(yield* Router.gc({ runtime: "cni", network: "pods", nodeNetns: node, valid: [{ containerId: id, ifname: "eth0" }] }), undefined)
      assert.isDefined(yield* nl.link(a.host.name, node))
      yield* Router.gc({ runtime: "cni", network: "pods", nodeNetns: node, valid: [] })
      assert.isUndefined(yield* nl.link(a.host.name, node))
      yield* detachRouter({ ...base, containerId: id })
    })))

  it.effect("GC of one runtime's network leaves other runtimes' networks of the same name, and collects the previous version's aliases as CNI's", () =>
    run(Effect.gen(function*() {
      const nl = yield* Netlink
      const lease = (n: number): Lease => ({ family: 4, ip: `10.237.9.${n}`, address: `10.237.9.${n}/24`, gateway: "10.237.9.1", rangeSet: 0 })
      const cni = yield* attachRouter({ ...base, runtime: "cni", network: "tailnet", containerId: "x1", netns: netnsPath(scope.create("x1")) })
      const netavark = yield* Router.wire({ runtime: "netavark", network: "tailnet", containerId: "x2", ifname: "eth0", nodeNetns: node, netns: netnsPath(scope.create("x2")) }, [lease(2)])
      const odd = yield* Router.wire({ runtime: "netavark", network: "tailnet:x", containerId: "x3", ifname: "eth0", nodeNetns: node, netns: netnsPath(scope.create("x3")) }, [lease(3)])
      const docker = yield* Router.wire({ runtime: "docker", network: "tailnet", containerId: "x4", ifname: "docker", nodeNetns: node, handoff: { peer: "csxpeer4" } }, [lease(4)])
      const legacy = hostInterfaceName("x5", "eth0")
      yield* nl.createTun(legacy, node)
      yield* nl.apply([{ op: "alias", dev: legacy, alias: "containerscale:tailnet:x5:eth0" }], node)
      const present = (name: string) => Effect.map(nl.link(name, node), (l) => l !== undefined)

      yield* Router.gc({ runtime: "cni", network: "tailnet", nodeNetns: node, valid: [] })
      assert.isFalse(yield* present(cni.host.name))
      assert.isFalse(yield* present(legacy))
      for (const kept of [netavark.host.name, odd.host.name, docker.host.name, "csxpeer4"]) assert.isTrue(yield* present(kept), kept)

      // Netavark's own GC of "tailnet" is not the network named "tailnet:x"
      yield* Router.gc({ runtime: "netavark", network: "tailnet", nodeNetns: node, valid: [] })
      assert.isFalse(yield* present(netavark.host.name))
      for (const kept of [odd.host.name, docker.host.name]) assert.isTrue(yield* present(kept), kept)
      yield* Router.gc({ runtime: "netavark", network: "tailnet:x", nodeNetns: node, valid: [{ containerId: "x3", ifname: "eth0" }] })
      assert.isTrue(yield* present(odd.host.name))
      yield* Router.gc({ runtime: "netavark", network: "tailnet:x", nodeNetns: node, valid: [] })
      assert.isFalse(yield* present(odd.host.name))
      yield* Router.gc({ runtime: "docker", network: "tailnet", nodeNetns: node, valid: [] })
      assert.isFalse(yield* present(docker.host.name))
      yield* Router.unwire({ containerId: "x4", ifname: "docker", nodeNetns: node, handoff: { peer: "csxpeer4" } })
      yield* detachRouter({ ...base, network: "tailnet", containerId: "x1" })
    })))
})

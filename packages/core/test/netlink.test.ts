import { layerIproute2, Netlink, NetlinkFailure } from "@containerscale/core"
import { netnsPath, netnsScope } from "@containerscale/testing"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFileSync } from "node:child_process"

/** The iproute2 Netlink layer on real namespaces: a "node" and a "container", both throwaway. */

const scope = netnsScope()
const node = netnsPath(scope.create("node"))
const ctr = netnsPath(scope.create("ctr"))
afterAll(() => scope.dispose())

const run = <A, E>(effect: Effect.Effect<A, E, Netlink>) => Effect.provide(effect, layerIproute2)

describe("Netlink over iproute2", () => {
  it.effect("creates a veth pair with the peer directly inside the target namespace", () =>
    run(Effect.gen(function*() {
      const nl = yield* Netlink
      const { host, peer } = yield* nl.createVeth({ name: "vethcs0", netns: node, peerName: "eth0", peerNetns: ctr, mtu: 1280 })
      assert.strictEqual(host.name, "vethcs0")
      assert.strictEqual(peer.name, "eth0")
      assert.strictEqual(peer.mtu, 1280)
      assert.strictEqual(host.mtu, 1280)
      assert.match(peer.mac ?? "", /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/)
      assert.strictEqual(peer.type, "ether")
      assert.isTrue((yield* nl.links(ctr)).some((l) => l.name === "eth0"))
      assert.isUndefined(yield* nl.link("eth0", node))
    })))

  it.effect("applies addresses and routes in one batch and reads them back", () =>
    run(Effect.gen(function*() {
      const nl = yield* Netlink
      yield* nl.apply([
        { op: "up", dev: "lo" },
        { op: "up", dev: "vethcs0" },
        { op: "address", dev: "vethcs0", cidr: "10.238.0.1/32" },
        { op: "route", dst: "10.238.0.5/32", dev: "vethcs0", scope: "link" }
      ], node)
      yield* nl.apply([
        { op: "up", dev: "lo" },
        { op: "up", dev: "eth0" },
        { op: "address", dev: "eth0", cidr: "10.238.0.5/24" },
        { op: "route", dst: "default", via: "10.238.0.1", dev: "eth0" }
      ], ctr)
      const addresses = yield* nl.addresses("eth0", ctr)
      assert.isTrue(addresses.some((a) => a.family === 4 && a.ip === "10.238.0.5" && a.prefix === 24))
      const routes = yield* nl.routes(4, ctr)
      assert.isTrue(routes.some((r) => r.dst === "default" && r.gateway === "10.238.0.1" && r.dev === "eth0"))
      const hostRoutes = yield* nl.routes(4, node)
      assert.isTrue(hostRoutes.some((r) => r.dst === "10.238.0.5" && r.dev === "vethcs0"))
      assert.isTrue((yield* nl.link("eth0", ctr))!.up)
      // the container reaches the node through the veth
      execFileSync("nsenter", [`--net=${ctr}`, "busybox", "ping", "-c", "1", "-W", "2", "10.238.0.1"], { stdio: "ignore" })
    })))

  it.effect("reads links back with show steps in the same batch, in order", () =>
    run(Effect.gen(function*() {
      const nl = yield* Netlink
      yield* nl.ready
      const shown = yield* nl.apply([{ op: "show", dev: "lo" }, { op: "mtu", dev: "eth0", mtu: 1300 }, { op: "show", dev: "eth0" }], ctr)
      assert.deepStrictEqual(shown.map((l) => [l.name, l.mtu]), [["lo", 65536], ["eth0", 1300]])
      yield* nl.apply([{ op: "mtu", dev: "eth0", mtu: 1280 }], ctr)
    })))

  it.effect("names the step that failed and iproute2's reason", () =>
    run(Effect.gen(function*() {
      const nl = yield* Netlink
      const error = yield* Effect.flip(nl.apply([{ op: "up", dev: "eth0" }, { op: "mtu", dev: "nosuch0", mtu: 1280 }], ctr))
      assert.instanceOf(error, NetlinkFailure)
      assert.strictEqual(error.cniCode, 105)
      assert.include(error.message, "step 2 of 2")
      assert.include(error.message, "link set dev nosuch0 mtu 1280")
      assert.include(error.message, "nosuch0")
      assert.strictEqual(error.failedOp, "mtu")
    })))

  it.effect("refuses names that are not plain words, before running anything", () =>
    run(Effect.gen(function*() {
      const nl = yield* Netlink
      const error = yield* Effect.flip(nl.apply([{ op: "up", dev: "eth0\nlink delete dev eth0" }], ctr))
      assert.include(error.message, "unexpected characters")
      assert.isDefined(yield* nl.link("eth0", ctr))
    })))

  it.effect("creates a TUN device inside the namespace", () =>
    run(Effect.gen(function*() {
      const nl = yield* Netlink
      const tun = yield* nl.createTun("tailscale0", ctr)
      assert.strictEqual(tun.name, "tailscale0")
      assert.strictEqual(tun.type, "none")
    })))

  it.effect("sets a sysctl in the namespace only", () =>
    run(Effect.gen(function*() {
      const nl = yield* Netlink
      const read = (ns: string) =>
        execFileSync("nsenter", [`--net=${ns}`, "sysctl", "-n", "net.ipv4.ip_forward"], { encoding: "utf8" }).trim()
      yield* nl.setSysctl("net.ipv4.ip_forward", "1", node)
      assert.strictEqual(read(node), "1")
      assert.strictEqual(read(ctr), "0")
    })))

  it.effect("deletes links idempotently and reports missing ones as absent", () =>
    run(Effect.gen(function*() {
      const nl = yield* Netlink
      assert.isTrue(yield* nl.deleteLink("vethcs0", node))
      assert.isFalse(yield* nl.deleteLink("vethcs0", node))
      assert.isUndefined(yield* nl.link("eth0", ctr)) // the peer went with it
    })))

  it.effect("fails clearly for a namespace path that does not exist", () =>
    run(Effect.gen(function*() {
      const nl = yield* Netlink
      const error = yield* Effect.flip(nl.links(`${node}-gone`))
      assert.instanceOf(error, NetlinkFailure)
      assert.include(error.message, `${node}-gone`)
    })))
})

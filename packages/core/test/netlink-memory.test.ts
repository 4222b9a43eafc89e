import {
  AlreadyAttached,
  hostInterfaceName,
  Ipam,
  layerIproute2,
  Netlink,
  NetlinkFailure,
  resolvePool,
  Router,
  type Step
} from "@containerscale/core"
import { netnsPath, netnsScope } from "@containerscale/testing"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Result } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { layerIpamMemory } from "../src/ipam/memoryStore.ts"
import { HOST_NETNS, makeNetlinkMemory } from "../src/netlink/memory.ts"

/**
 * The in-memory Netlink (netlink/memory.ts): its semantics, router mode's whole workflow over it,
 * and the same steps through it and through iproute2 on real namespaces, reporting the same.
 */

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-netlink-memory-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

/** a fresh model with namespaces at paths that exist (Router.check looks for the file) */
const setup = (...names: ReadonlyArray<string>) => {
  const memory = makeNetlinkMemory()
  const paths = names.map((n) => {
    const p = fs.mkdtempSync(path.join(dir, `${n}-`))
    memory.addNamespace(p)
    return p
  })
  return { memory, paths, run: <A, E>(effect: Effect.Effect<A, E, Netlink>) => Effect.provide(effect, memory.layer) }
}

const names = (links: ReadonlyArray<{ readonly name: string }>) => links.map((l) => l.name)

describe("Netlink in memory", () => {
  it.effect("creates the host end where apply runs and the peer in peerNetns, /proc/self/ns/net being the former", () => {
    const { memory, paths: [node, ctr], run } = setup("node", "ctr")
    return run(Effect.gen(function*() {
      const nl = yield* Netlink
      const { host, peer } = yield* nl.createVeth({ name: "h0", netns: node, peerName: "eth0", peerNetns: ctr!, mtu: 1280 })
      assert.deepStrictEqual([host.name, host.mtu, host.type, host.up, peer.name, peer.mtu], ["h0", 1280, "ether", false, "eth0", 1280])
      assert.notStrictEqual(host.mac, peer.mac)
      for (const mac of [host.mac, peer.mac]) assert.match(mac!, /^02(:[0-9a-f]{2}){5}$/) // locally administered
      yield* nl.apply([{ op: "veth", name: "x0", peerName: "x1", peerNetns: "/proc/self/ns/net" }], node)
      assert.deepStrictEqual(names(yield* nl.links(node)), ["lo", "h0", "x1", "x0"])
      assert.deepStrictEqual(names(yield* nl.links(ctr)), ["lo", "eth0"])
      assert.deepStrictEqual(names(yield* nl.links()), ["lo"])
      assert.strictEqual(memory.namespaces.get(node!)!.links.find((l) => l.name === "x0")!.peer, "x1")
    }))
  })

  it.effect("fails with failedOp veth and exists when either name is taken, changing nothing", () => {
    const { memory, paths: [node, ctr], run } = setup("node", "ctr")
    return run(Effect.gen(function*() {
      const nl = yield* Netlink
      const veth = (name: string, peerName: string): Step => ({ op: "veth", name, peerName, peerNetns: ctr! })
      yield* nl.apply([veth("h0", "eth0")], node)
      const before = memory.namespaces
      for (const step of [veth("h0", "eth1"), veth("h1", "eth0")]) {
        const error = yield* Effect.flip(nl.apply([step], node))
        assert.instanceOf(error, NetlinkFailure)
        assert.strictEqual(error.failedOp, "veth")
        assert.isTrue(error.exists)
        assert.include(error.message, "File exists")
      }
      assert.deepStrictEqual(memory.namespaces, before)
    }))
  })

  it.effect("names the failing step, keeps the steps before it and runs none after", () => {
    const { paths: [node], run } = setup("node")
    return run(Effect.gen(function*() {
      const nl = yield* Netlink
      const error = yield* Effect.flip(nl.apply([
        { op: "veth", name: "h0", peerName: "p0", peerNetns: "/proc/self/ns/net" },
        { op: "mtu", dev: "nosuch0", mtu: 1300 },
        { op: "up", dev: "h0" }
      ], node))
      assert.strictEqual(error.failedOp, "mtu")
      assert.isFalse(error.exists)
      assert.include(error.message, `step 2 of 3 in ${node} failed: "ip link set dev nosuch0 mtu 1300": Cannot find device "nosuch0"`)
      assert.isFalse((yield* nl.link("h0", node))!.up)
      const shown = yield* nl.apply([{ op: "up", dev: "h0" }, { op: "show", dev: "p0" }, { op: "alias", dev: "h0", alias: "a:b" }, {
        op: "show",
        dev: "h0"
      }], node)
      assert.deepStrictEqual(shown.map((l) => [l.name, l.up, l.alias]), [["p0", false, undefined], ["h0", true, "a:b"]])
      const missing = yield* Effect.flip(nl.apply([{ op: "show", dev: "nosuch0" }], node))
      assert.include(missing.message, `Device "nosuch0" does not exist.`)
      assert.strictEqual((yield* Effect.flip(nl.apply([{ op: "delete", dev: "nosuch0" }], node))).failedOp, "delete")
    }))
  })

  it.effect("keeps addresses and routes as the kernel does: prefix routes, on-link gateways, up devices", () => {
    const { paths: [node], run } = setup("node")
    return run(Effect.gen(function*() {
      const nl = yield* Netlink
      const fail = (steps: ReadonlyArray<Step>) => Effect.map(Effect.flip(nl.apply(steps, node)), (e) => e.message)
      yield* nl.apply([{ op: "veth", name: "h0", peerName: "p0", peerNetns: "/proc/self/ns/net" }], node)
      assert.include(yield* fail([{ op: "route", dst: "10.1.0.9/32", dev: "h0" }]), "Device for nexthop is not up")
      yield* nl.apply([
        { op: "up", dev: "h0" },
        { op: "address", dev: "h0", cidr: "10.1.0.2/24" },
        { op: "address", dev: "h0", cidr: "10.2.0.2/24", flags: ["noprefixroute"] },
        { op: "address", dev: "h0", cidr: "fd00:1::2/64", flags: ["nodad", "noprefixroute"] },
        { op: "route", dst: "10.3.0.1/32", dev: "h0", scope: "link" },
        { op: "route", dst: "0.0.0.0/0", via: "10.3.0.1", dev: "h0" },
        { op: "route", dst: "fd00:1::1/128", dev: "h0", scope: "link" },
        { op: "route", dst: "::/0", via: "fd00:1::1", dev: "h0" }
      ], node)
      assert.deepStrictEqual((yield* nl.routes(4, node)).map((r) => [r.dst, r.gateway, r.scope]), [
        ["default", "10.3.0.1", undefined],
        ["10.1.0.0/24", undefined, "link"],
        ["10.3.0.1", undefined, "link"]
      ])
      assert.deepStrictEqual((yield* nl.routes(6, node)).map((r) => [r.dst, r.gateway]), [["fd00:1::1", undefined], ["default", "fd00:1::1"]])
      assert.deepStrictEqual((yield* nl.addresses("h0", node)).map((a) => `${a.ip}/${a.prefix} ${a.scope}`), [
        "10.1.0.2/24 global",
        "10.2.0.2/24 global",
        "fd00:1::2/64 global"
      ])
      assert.include(yield* fail([{ op: "route", dst: "10.9.0.0/16", via: "10.2.0.1", dev: "h0" }]), "Nexthop has invalid gateway")
      assert.include(yield* fail([{ op: "route", dst: "10.9.0.1/16", dev: "h0" }]), "Invalid prefix for given prefix length")
      assert.include(yield* fail([{ op: "address", dev: "h0", cidr: "10.1.0.2/24" }]), "Address already assigned")
      const twice = yield* Effect.flip(nl.apply([{ op: "route", dst: "10.3.0.1", dev: "h0" }], node))
      assert.isTrue(twice.exists)
      // both ends up: the kernel's IPv6 link-local addresses and routes appear
      yield* nl.apply([{ op: "up", dev: "p0" }], node)
      assert.isTrue((yield* nl.addresses("p0", node)).some((a) => a.ip.startsWith("fe80::") && a.scope === "link"))
      assert.deepStrictEqual((yield* nl.routes(6, node)).map((r) => `${r.dst} ${r.dev}`), [
        "fd00:1::1 h0",
        "fe80::/64 p0",
        "fe80::/64 h0",
        "default h0"
      ])
    }))
  })

  it.effect("deletes a veth end with its peer, their addresses, routes and sysctls; false when absent", () => {
    const { memory, paths: [node, ctr], run } = setup("node", "ctr")
    return run(Effect.gen(function*() {
      const nl = yield* Netlink
      yield* nl.createVeth({ name: "h0", netns: node, peerName: "eth0", peerNetns: ctr! })
      yield* nl.apply([{ op: "up", dev: "h0" }, { op: "route", dst: "10.1.0.5", dev: "h0" }], node)
      yield* nl.apply([{ op: "up", dev: "eth0" }, { op: "address", dev: "eth0", cidr: "10.1.0.5/24" }], ctr)
      yield* nl.setSysctl("net.ipv4.conf.h0.proxy_arp", "1", node)
      yield* nl.setSysctl("net.ipv4.ip_forward", "1", node)
      assert.isTrue(yield* nl.deleteLink("eth0", ctr))
      assert.isFalse(yield* nl.deleteLink("eth0", ctr))
      assert.isUndefined(yield* nl.link("h0", node))
      assert.deepStrictEqual(yield* nl.routes(4, node), [])
      assert.deepStrictEqual(yield* nl.routes(4, ctr), [])
      assert.deepStrictEqual([...memory.namespaces.get(node!)!.sysctls], [["net.ipv4.ip_forward", "1"]])
      assert.deepStrictEqual(memory.namespaces.get(HOST_NETNS)!.sysctls.size, 0)
      const noDevice = yield* Effect.flip(nl.setSysctl("net.ipv4.conf.h0.proxy_arp", "1", node))
      assert.include(noDevice.message, "No such file or directory")
      assert.strictEqual((yield* nl.createTun("tailscale0", ctr)).type, "none")
    }))
  })

  it.effect("fails clearly on a namespace that does not exist, and takes a removed one's links with it", () => {
    const { memory, paths: [ctr], run } = setup("ctr")
    const gone = `${ctr}-gone`
    return run(Effect.gen(function*() {
      const nl = yield* Netlink
      for (const effect of [nl.links(gone), nl.apply([{ op: "up", dev: "lo" }], gone), nl.deleteLink("eth0", gone), nl.setSysctl("a.b", "1", gone)]) {
        const error = yield* Effect.flip(effect)
        assert.instanceOf(error, NetlinkFailure)
        assert.include(error.message, `nsenter: cannot open ${gone}`)
      }
      const peerGone = yield* Effect.flip(nl.createVeth({ name: "h0", peerName: "eth0", peerNetns: gone }))
      assert.include(peerGone.message, `Invalid "netns" value`)
      yield* nl.createVeth({ name: "h0", peerName: "eth0", peerNetns: ctr! })
      memory.removeNamespace(ctr!)
      assert.deepStrictEqual(names(yield* nl.links()), ["lo"])
      assert.isFalse(memory.namespaces.has(ctr!))
    }))
  })
})

describe("router mode over the in-memory Netlink", () => {
  const pool = Result.getOrThrow(resolvePool({ ranges: [[{ subnet: "10.237.0.0/24" }], [{ subnet: "fd00:237::/64" }]] }))
  const fresh = (...names: ReadonlyArray<string>) => {
    const s = setup(...names)
    const layer = Layer.mergeAll(s.memory.layer, layerIpamMemory())
    return { ...s, run: <A, E>(effect: Effect.Effect<A, E, Ipam | Netlink>) => Effect.provide(effect, layer) }
  }
  const base = { network: "pods", pool, ifname: "eth0" }
  const check = (containerId: string, netns: string, addresses: ReadonlyArray<string>) =>
    Router.check({ ...base, containerId, netns, addresses, ipam: { pool } })

  it.effect("attaches, checks, refuses a second attach, collects and detaches", () => {
    const { memory, paths: [c1, c2], run } = fresh("c1", "c2")
    return run(Effect.gen(function*() {
      const nl = yield* Netlink
      const ipam = yield* Ipam
      const a = yield* Router.attach({ ...base, containerId: "c1", netns: c1! })
      const addresses = a.leases.map((l) => l.address)
      assert.deepStrictEqual(addresses, ["10.237.0.2/24", "fd00:237::2/64"])
      yield* check("c1", c1!, addresses)
      const host = memory.namespaces.get(HOST_NETNS)!
      assert.deepStrictEqual(host.links.find((l) => l.name === a.host.name)!.addresses.map((x) => x.ip).slice(0, 2), ["10.237.0.1", "fd00:237::1"])
      assert.isTrue(host.routes.some((r) => r.dst === "10.237.0.2" && r.dev === a.host.name && r.scope === "link"))
      assert.strictEqual(host.sysctls.get("net.ipv4.ip_forward"), "1")
      assert.deepStrictEqual((yield* nl.routes(4, c1)).map((r) => [r.dst, r.gateway]), [["default", "10.237.0.1"], ["10.237.0.1", undefined]])

      const again = yield* Effect.flip(Router.attach({ ...base, containerId: "c1", netns: c1! }))
      assert.instanceOf(again, AlreadyAttached)
      yield* check("c1", c1!, addresses)

      const b = yield* Router.attach({ ...base, containerId: "c2", netns: c2! })
      yield* Router.gc({ network: "pods", valid: [{ containerId: "c1", ifname: "eth0" }] })
      assert.isUndefined(yield* nl.link(b.host.name))
      assert.isUndefined(yield* nl.link("eth0", c2))
      yield* check("c1", c1!, addresses)

      yield* Router.detach({ ...base, containerId: "c1" })
      assert.isUndefined(yield* nl.link(a.host.name))
      assert.deepStrictEqual(names(yield* nl.links(c1)), ["lo"])
      assert.deepStrictEqual(yield* ipam.leases({ ...base, containerId: "c1" }), [])
      assert.isUndefined(memory.namespaces.get(HOST_NETNS)!.routes.find((r) => r.dst === "10.237.0.2"))
    }))
  })

  it.effect("leaves no link and no address when an attach fails", () => {
    const { paths: [c1], run } = fresh("c1")
    return run(Effect.gen(function*() {
      const nl = yield* Netlink
      const ipam = yield* Ipam
      for (const netns of [`${c1}-gone`, c1!]) {
        if (netns === c1) yield* nl.createTun("eth0", c1) // the name is taken inside the container
        const error = yield* Effect.flip(Router.attach({ ...base, containerId: "c3", netns }))
        assert.instanceOf(error, NetlinkFailure)
        assert.deepStrictEqual(names(yield* nl.links()), ["lo"])
        assert.deepStrictEqual(yield* ipam.leases({ ...base, containerId: "c3" }), [])
      }
    }))
  })

  it.effect("hands the peer over in the node's namespace with proxy ARP", () => {
    const { memory, run } = fresh()
    return run(Effect.gen(function*() {
      const nl = yield* Netlink
      const leases = yield* (yield* Ipam).allocate({ ...base, containerId: "d1" })
      const wired = yield* Router.wire({ network: "pods", containerId: "d1", ifname: "eth0", handoff: { peer: "csp0" } }, leases)
      assert.strictEqual(wired.container.name, "csp0")
      assert.deepStrictEqual(wired.routes, [])
      const host = hostInterfaceName("d1", "eth0")
      assert.deepStrictEqual(names(yield* nl.links()), ["lo", "csp0", host])
      assert.strictEqual(memory.namespaces.get(HOST_NETNS)!.sysctls.get(`net.ipv4.conf.${host}.proxy_arp`), "1")
      yield* Router.unwire({ containerId: "d1", ifname: "eth0", handoff: { peer: "csp0" } })
      assert.deepStrictEqual(names(yield* nl.links()), ["lo"])
    }))
  })
})

describe("the in-memory Netlink against iproute2", () => {
  const scope = netnsScope()
  afterAll(() => scope.dispose())

  /** What the namespace reports, without indexes, MACs and the link-local addresses' interface ids. */
  const report = (netns: string) =>
    Effect.gen(function*() {
      const nl = yield* Netlink
      const links = yield* nl.links(netns)
      return {
        links: yield* Effect.forEach(links, (l) =>
          Effect.map(nl.addresses(l.name, netns), (as) => ({
            link: [l.name, l.mtu, l.up, l.type, l.alias],
            addresses: as.map((a) => `${a.ip.startsWith("fe80:") ? "fe80::*" : a.ip}/${a.prefix} ${a.scope}`)
          }))),
        routes: [...yield* nl.routes(4, netns), ...yield* nl.routes(6, netns)]
      }
    })

  it.effect("reports the same after the same steps, failures included", () => {
    const node = netnsPath(scope.create("node"))
    const ctr = netnsPath(scope.create("ctr"))
    const memory = makeNetlinkMemory()
    memory.addNamespace(node)
    memory.addNamespace(ctr)
    const sequence = Effect.gen(function*() {
      const nl = yield* Netlink
      const outcomes: Array<unknown> = []
      const step = (steps: ReadonlyArray<Step>, netns: string) =>
        nl.apply(steps, netns).pipe(
          Effect.map((links) => links.map((l) => [l.name, l.mtu, l.up])),
          Effect.catch((e) => Effect.succeed([e.message, e.failedOp, e.exists])),
          Effect.map((outcome) => outcomes.push(outcome))
        )
      yield* step([
        { op: "up", dev: "lo" },
        { op: "veth", name: "h0", peerName: "eth0", peerNetns: ctr, mtu: 1400 },
        { op: "alias", dev: "h0", alias: "containerscale:pods:c1:eth0" },
        { op: "up", dev: "h0" },
        { op: "address", dev: "h0", cidr: "10.240.0.1/32", flags: ["noprefixroute"] },
        { op: "address", dev: "h0", cidr: "fd00:240::1/128", flags: ["noprefixroute", "nodad"] },
        { op: "route", dst: "10.240.0.2/32", dev: "h0", scope: "link" },
        { op: "route", dst: "fd00:240::2/128", dev: "h0", scope: "link" },
        { op: "show", dev: "h0" }
      ], node)
      yield* step([
        { op: "up", dev: "lo" },
        { op: "up", dev: "eth0" },
        { op: "address", dev: "eth0", cidr: "10.240.0.2/24", flags: ["noprefixroute"] },
        { op: "address", dev: "eth0", cidr: "fd00:240::2/64", flags: ["noprefixroute", "nodad"] },
        { op: "address", dev: "eth0", cidr: "10.241.0.5/16" },
        { op: "route", dst: "10.240.0.1/32", dev: "eth0", scope: "link" },
        { op: "route", dst: "0.0.0.0/0", via: "10.240.0.1", dev: "eth0" },
        { op: "route", dst: "fd00:240::1/128", dev: "eth0", scope: "link" },
        { op: "route", dst: "::/0", via: "fd00:240::1", dev: "eth0" },
        { op: "show", dev: "eth0" },
        { op: "show", dev: "lo" }
      ], ctr)
      yield* step([
        { op: "veth", name: "x0", peerName: "x1", peerNetns: "/proc/self/ns/net" },
        { op: "up", dev: "x0" },
        { op: "address", dev: "x0", cidr: "fd00:241::1/64", flags: ["nodad"] },
        { op: "mtu", dev: "x1", mtu: 1300 }
      ], node)
      yield* step([{ op: "veth", name: "h0", peerName: "eth9", peerNetns: ctr }], node)
      yield* step([{ op: "veth", name: "h9", peerName: "eth0", peerNetns: ctr }], node)
      yield* step([{ op: "route", dst: "10.9.0.0/16", via: "10.9.0.1", dev: "eth0" }], ctr)
      yield* step([{ op: "route", dst: "10.9.0.0/16", dev: "x1" }], node)
      yield* step([{ op: "address", dev: "eth0", cidr: "10.240.0.2/24" }], ctr)
      yield* step([{ op: "route", dst: "10.240.0.1", dev: "eth0" }], ctr)
      yield* step([{ op: "up", dev: "x1" }, { op: "mtu", dev: "nosuch0", mtu: 1300 }, { op: "up", dev: "nosuch1" }], node)
      const before = [yield* report(node), yield* report(ctr)]
      const deleted = [yield* nl.deleteLink("eth0", ctr), yield* nl.deleteLink("eth0", ctr)]
      return { outcomes, before, deleted, after: [yield* report(node), yield* report(ctr)] }
    })
    return Effect.gen(function*() {
      const real = yield* Effect.provide(sequence, layerIproute2)
      const model = yield* Effect.provide(sequence, memory.layer)
      assert.deepStrictEqual(model, real)
      assert.strictEqual(real.outcomes.filter((o) => typeof (o as Array<unknown>)[0] === "string").length, 7)
    })
  })
})

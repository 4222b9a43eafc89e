import { hostInterfaceName } from "@containerscale/core"
import { listLinks, netnsPath, netnsScope } from "@containerscale/testing"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { execFileSync, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { hex64, type Running, startDriver, tempDir } from "./helpers.ts"

/**
 * Router mode against real namespaces: the driver works in a throwaway "node" namespace, and the
 * test does what dockerd does after Join (move SrcName into the sandbox, rename it eth0, add the
 * address and the default route), then checks the container reaches the node and the shapes.
 */

const ip = (netns: string, ...args: Array<string>) => execFileSync("ip", ["-n", netns, ...args], { encoding: "utf8" })

describe("containerscale-docker router wiring", () => {
  const scope = netnsScope()
  const node = scope.create("node")
  const sandbox = scope.create("sbx")
  const dir = tempDir("wiring")
  let d: Running
  const NET = hex64("a1")
  const EP = hex64("b2")
  beforeAll(async () => {
    ip(node, "link", "set", "lo", "up")
    d = await startDriver({ dir, nodeNetns: netnsPath(node) })
  })
  afterAll(async () => {
    await d?.close()
    scope.dispose()
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it("creates the pair, returns Join's shape, and the container reaches its gateway", async () => {
    const { body: pool } = await d.call("IpamDriver.RequestPool", { Pool: "10.88.0.0/24" })
    const gw = pool.Data["com.docker.network.gateway"]
    expect((await d.call("NetworkDriver.CreateNetwork", {
      NetworkID: NET,
      Options: { "com.docker.network.generic": {}, "com.docker.network.enable_ipv6": false },
      IPv4Data: [{ AddressSpace: "containerscale-local", Pool: pool.Pool, Gateway: gw }]
    })).body).toEqual({})
    const { body: addr } = await d.call("IpamDriver.RequestAddress", { PoolID: pool.PoolID })
    expect(addr.Address).toBe("10.88.0.2/24")
    const ce = await d.call("NetworkDriver.CreateEndpoint", {
      NetworkID: NET,
      EndpointID: EP,
      Interface: { Address: addr.Address, AddressIPv6: "", MacAddress: "" },
      Options: {}
    })
    // never echoes the address dockerd set
    expect(ce.body).toEqual({})
    const host = listLinks(node, "cs")
    expect(host).toHaveLength(1)
    const join = await d.call("NetworkDriver.Join", { NetworkID: NET, EndpointID: EP, SandboxKey: netnsPath(sandbox), Options: {} })
    expect(join.body).toEqual({
      InterfaceName: { SrcName: `cp${host[0]!.slice(2)}`, DstPrefix: "eth" },
      Gateway: "10.88.0.1",
      DisableGatewayService: true
    })
    const src = join.body.InterfaceName.SrcName as string
    const hostEnd = JSON.parse(ip(node, "-j", "addr", "show", "dev", host[0]!))[0]
    expect(hostEnd.mtu).toBe(1280)
    expect(hostEnd.addr_info.map((a: any) => `${a.local}/${a.prefixlen}`)).toEqual(["10.88.0.1/32"])
    expect(ip(node, "route", "show", "10.88.0.2")).toMatch(new RegExp(`10.88.0.2 dev ${host[0]} scope link`))
    // what dockerd does next
    ip(node, "link", "set", src, "netns", netnsPath(sandbox))
    ip(sandbox, "link", "set", src, "name", "eth0")
    ip(sandbox, "address", "add", addr.Address, "dev", "eth0")
    ip(sandbox, "link", "set", "eth0", "up")
    ip(sandbox, "route", "add", "default", "via", "10.88.0.1")
    // no ping here: a TCP connect to a closed port is refused (RST) only when the node is reachable
    const tcp = spawnSync("ip", ["netns", "exec", sandbox, "timeout", "3", "bash", "-c", "exec 3<>/dev/tcp/10.88.0.1/9"], { encoding: "utf8" })
    expect(tcp.stderr).toMatch(/Connection refused/)
    const info = await d.call("NetworkDriver.EndpointOperInfo", { NetworkID: NET, EndpointID: EP })
    expect(info.body).toEqual({ Value: { "containerscale.mode": "router", "containerscale.host-interface": host[0] } })
    // Leave keeps the link (dockerd moves it back afterwards); DeleteEndpoint removes it, twice is fine
    expect((await d.call("NetworkDriver.Leave", { NetworkID: NET, EndpointID: EP })).body).toEqual({})
    expect(listLinks(node, "cs")).toHaveLength(1)
    expect((await d.call("NetworkDriver.DeleteEndpoint", { NetworkID: NET, EndpointID: EP })).body).toEqual({})
    expect((await d.call("NetworkDriver.DeleteEndpoint", { NetworkID: NET, EndpointID: EP })).body).toEqual({})
    expect(listLinks(node, "cs")).toEqual([])
    expect(listLinks(sandbox, "eth0")).toEqual([])
  })

  it("keeps the endpoint across a driver restart and rewires a missing pair at Join", async () => {
    const ep = hex64("c3")
    expect((await d.call("NetworkDriver.CreateEndpoint", { NetworkID: NET, EndpointID: ep, Interface: { Address: "10.88.0.9/24" } })).body).toEqual({})
    await d.close()
    d = await startDriver({ dir, nodeNetns: netnsPath(node) })
    const host = hostInterfaceName(ep, "docker")
    ip(node, "link", "delete", host)
    const join = await d.call("NetworkDriver.Join", { NetworkID: NET, EndpointID: ep, SandboxKey: netnsPath(sandbox) })
    expect(join.body.Gateway).toBe("10.88.0.1")
    expect(listLinks(node, "c").sort()).toEqual([host, join.body.InterfaceName.SrcName].sort())
    // a repeated CreateEndpoint of a recorded endpoint is refused, and its pair stays
    const links = listLinks(node, "c").sort()
    expect((await d.call("NetworkDriver.CreateEndpoint", { NetworkID: NET, EndpointID: ep, Interface: { Address: "10.88.0.9/24" } })).body.Err)
      .toMatch(/exists already/)
    expect(listLinks(node, "c").sort()).toEqual(links)
    expect((await d.call("NetworkDriver.DeleteNetwork", { NetworkID: NET })).body).toEqual({})
    expect(listLinks(node, "c")).toEqual([])
  })

  it("routes only the tailnet on --internal networks", async () => {
    const net = hex64("d4")
    await d.call("NetworkDriver.CreateNetwork", {
      NetworkID: net,
      Options: { "com.docker.network.generic": { "containerscale.mtu": "1400" }, "com.docker.network.internal": true },
      IPv4Data: [{ Pool: "10.89.0.0/24", Gateway: "10.89.0.1/24" }]
    })
    const ep = hex64("e5")
    await d.call("NetworkDriver.CreateEndpoint", { NetworkID: net, EndpointID: ep, Interface: { Address: "10.89.0.2/24" } })
    const join = await d.call("NetworkDriver.Join", { NetworkID: net, EndpointID: ep, SandboxKey: netnsPath(sandbox) })
    expect(join.body).toMatchObject({ StaticRoutes: [{ Destination: "100.64.0.0/10", RouteType: 0, NextHop: "10.89.0.1" }], DisableGatewayService: true })
    expect(join.body.Gateway).toBeUndefined()
    expect(JSON.parse(ip(node, "-j", "link", "show", "dev", join.body.InterfaceName.SrcName))[0].mtu).toBe(1400)
    await d.call("NetworkDriver.DeleteEndpoint", { NetworkID: net, EndpointID: ep })
    await d.call("NetworkDriver.DeleteNetwork", { NetworkID: net })
  })

  it("refuses a second CreateEndpoint of a recorded endpoint without touching its pair; replaces a stale pair no record owns", async () => {
    const net = hex64("f6")
    expect((await d.call("NetworkDriver.CreateNetwork", { NetworkID: net, IPv4Data: [{ Pool: "10.90.0.0/24", Gateway: "10.90.0.1/24" }] })).body).toEqual({})
    const ep = hex64("a7")
    expect((await d.call("NetworkDriver.CreateEndpoint", { NetworkID: net, EndpointID: ep, Interface: { Address: "10.90.0.2/24" } })).body).toEqual({})
    const join = await d.call("NetworkDriver.Join", { NetworkID: net, EndpointID: ep, SandboxKey: netnsPath(sandbox) })
    const src = join.body.InterfaceName.SrcName as string
    ip(node, "link", "set", src, "netns", netnsPath(sandbox))
    ip(sandbox, "link", "set", src, "name", "eth1")
    const host = hostInterfaceName(ep, "docker")
    const index = (netns: string, dev: string) => JSON.parse(ip(netns, "-j", "link", "show", "dev", dev))[0].ifindex as number
    const before = { host: index(node, host), eth1: index(sandbox, "eth1") }
    const record = fs.readFileSync(path.join(d.stateDir, "docker", "endpoints", `${ep}.json`), "utf8")
    // the same ID again (any address): refused, the container keeps its interface, the record stays
    for (const address of ["10.90.0.2/24", "10.90.0.3/24"]) {
      const again = await d.call("NetworkDriver.CreateEndpoint", { NetworkID: net, EndpointID: ep, Interface: { Address: address } })
      expect(again.body.Err).toMatch(new RegExp(`endpoint ${ep.slice(0, 12)} exists already`))
    }
    expect({ host: index(node, host), eth1: index(sandbox, "eth1") }).toEqual(before)
    expect(fs.readFileSync(path.join(d.stateDir, "docker", "endpoints", `${ep}.json`), "utf8")).toBe(record)
    // a pair under an unrecorded endpoint's names (left by a crash before it was recorded) is replaced
    const stale = hex64("b8")
    const staleHost = hostInterfaceName(stale, "docker")
    ip(node, "link", "add", staleHost, "type", "veth", "peer", "name", `cp${staleHost.slice(2)}`)
    const staleIndex = index(node, staleHost)
    expect((await d.call("NetworkDriver.CreateEndpoint", { NetworkID: net, EndpointID: stale, Interface: { Address: "10.90.0.4/24" } })).body).toEqual({})
    expect(index(node, staleHost)).not.toBe(staleIndex)
    expect(ip(node, "route", "show", "10.90.0.4")).toMatch(new RegExp(`dev ${staleHost}`))
    expect((await d.call("NetworkDriver.DeleteNetwork", { NetworkID: net })).body).toEqual({})
    expect(listLinks(node, "c")).toEqual([])
    expect(listLinks(sandbox, "eth1")).toEqual([])
  })
})

import { hostInterfaceName } from "@containerscale/core"
import { execPlugin, listLinks, netnsPath, netnsScope, type PluginInvocation } from "@containerscale/testing"
import { distBin } from "@containerscale/sandbox"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { execFileSync, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { hex64, type Running, startDriver, tempDir } from "./helpers.ts"

/**
 * Three runtimes on one node (a throwaway namespace): a Netavark router container and a CNI router
 * container on networks both named "tailnet", and a Docker endpoint, each wired by its real
 * adapter. GC of one runtime's network removes that runtime's host ends only.
 */

const CNI = path.join(distBin(), "containerscale")
const NETAVARK = path.join(distBin(), "containerscale-netavark")
const ip = (netns: string, ...args: Array<string>) => execFileSync("ip", ["-n", netns, ...args], { encoding: "utf8" })
const aliasOf = (netns: string, dev: string): string | undefined => JSON.parse(ip(netns, "-j", "link", "show", "dev", dev))[0].ifalias

describe("GC of one runtime keeps the other runtimes' interfaces", () => {
  const scope = netnsScope()
  const node = scope.create("node")
  const dir = tempDir("xgc")
  const dataDir = path.join(dir, "ipam")
  let d: Running
  beforeAll(async () => {
    d = await startDriver({ dir, nodeNetns: netnsPath(node) })
  })
  afterAll(async () => {
    await d?.close()
    scope.dispose()
    fs.rmSync(dir, { recursive: true, force: true })
  })

  const cniConf = (name: string, extra: Record<string, unknown> = {}) => ({
    cniVersion: "1.1.0",
    name,
    type: "containerscale",
    mode: "router",
    ipam: { type: "containerscale-ipam", dataDir, ranges: [[{ subnet: "10.239.1.0/24" }]] },
    ...extra
  })
  const cni = (command: PluginInvocation["command"], containerId: string, ctr: string | undefined, config: object) =>
    execPlugin(CNI, { command, containerId, netns: ctr === undefined ? "" : netnsPath(ctr), ifname: "eth0", path: distBin(), runIn: node }, config)
  const netavark = (args: ReadonlyArray<string>, input: object) => {
    const out = spawnSync("nsenter", [`--net=${netnsPath(node)}`, "--", NETAVARK, ...args], {
      input: JSON.stringify(input),
      encoding: "utf8",
      env: { PATH: process.env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin" }
    })
    return { exitCode: out.status, stdout: out.stdout, stderr: out.stderr }
  }
  const podmanNetwork = (name: string) => ({
    name,
    id: "c7".repeat(32),
    driver: "containerscale-netavark",
    subnets: [{ subnet: "10.239.2.0/24", gateway: "10.239.2.1" }],
    options: { mode: "router" },
    ipam_options: { driver: "host-local" }
  })

  it("CNI GC with an empty valid list removes CNI's host ends (also the previous version's), not Netavark's or Docker's", async () => {
    // Netavark: network "tailnet", container eth0
    const nvCtr = scope.create("nv")
    const nvId = "ab".repeat(32)
    const nvCall = {
      container_id: nvId,
      network: podmanNetwork("tailnet"),
      network_options: { interface_name: "eth0", static_ips: ["10.239.2.5"] }
    }
    const nv = netavark(["setup", netnsPath(nvCtr)], nvCall)
    expect(nv.exitCode, nv.stdout + nv.stderr).toBe(0)
    const nvHost = hostInterfaceName(nvId, "eth0")

    // CNI: a network also named "tailnet"
    const cniCtr = scope.create("cni")
    const add = await cni("ADD", "cni-ctr", cniCtr, cniConf("tailnet"))
    expect(add.exitCode, add.stdout + add.stderr).toBe(0)
    const cniHost = hostInterfaceName("cni-ctr", "eth0")

    // Docker: an endpoint, its peer waiting in the node's namespace
    const NET = hex64("d3")
    const EP = hex64("e4")
    const { body: pool } = await d.call("IpamDriver.RequestPool", { Pool: "10.239.3.0/24" })
    expect((await d.call("NetworkDriver.CreateNetwork", {
      NetworkID: NET,
      Options: { "com.docker.network.generic": {} },
      IPv4Data: [{ AddressSpace: "containerscale-local", Pool: pool.Pool, Gateway: pool.Data["com.docker.network.gateway"] }]
    })).body).toEqual({})
    const { body: addr } = await d.call("IpamDriver.RequestAddress", { PoolID: pool.PoolID })
    expect((await d.call("NetworkDriver.CreateEndpoint", { NetworkID: NET, EndpointID: EP, Interface: { Address: addr.Address } })).body).toEqual({})
    const dockerHost = hostInterfaceName(EP, "docker")

    // left by the previous version, which wrote containerscale:<network>:<id>:<ifname> for CNI
    const legacy = hostInterfaceName("old", "eth0")
    const legacyOther = hostInterfaceName("old-other", "eth0")
    ip(node, "tuntap", "add", "dev", legacy, "mode", "tun")
    ip(node, "link", "set", legacy, "alias", "containerscale:tailnet:old:eth0")
    ip(node, "tuntap", "add", "dev", legacyOther, "mode", "tun")
    ip(node, "link", "set", legacyOther, "alias", "containerscale:other:old-other:eth0")

    // each alias says whose it is
    expect(aliasOf(node, nvHost)).toBe(`containerscale:netavark:tailnet:${nvId}:eth0`)
    expect(aliasOf(node, cniHost)).toBe("containerscale:cni:tailnet:cni-ctr:eth0")
    expect(aliasOf(node, dockerHost)).toBe(`containerscale:docker:docker-${NET.slice(0, 12)}:${EP}:docker`)

    const all = [nvHost, cniHost, dockerHost, legacy, legacyOther]
    expect(listLinks(node, "cs")).toEqual(expect.arrayContaining(all))

    // CNI GC of a network named as the Docker network is in the core: Docker's endpoint stays
    const gcDockerName = await cni("GC", "", undefined, cniConf(`docker-${NET.slice(0, 12)}`, { "cni.dev/valid-attachments": [] }))
    expect(gcDockerName.exitCode, gcDockerName.stdout).toBe(0)
    expect(listLinks(node, "cs")).toEqual(expect.arrayContaining(all))

    const gc = await cni("GC", "", undefined, cniConf("tailnet", { "cni.dev/valid-attachments": [] }))
    expect(gc.exitCode, gc.stdout).toBe(0)
    const left = listLinks(node, "c")
    expect(left).not.toContain(cniHost)
    expect(left).not.toContain(legacy)
    expect(left).toEqual(expect.arrayContaining([nvHost, dockerHost, `cp${dockerHost.slice(2)}`, legacyOther]))
    // the Netavark container keeps its interface and address
    expect(ip(nvCtr, "-br", "addr", "show", "dev", "eth0")).toMatch(/10\.239\.2\.5\/24/)
    expect(listLinks(cniCtr, "eth0")).toEqual([])

    expect(netavark(["teardown", netnsPath(nvCtr)], nvCall).exitCode).toBe(0)
    expect((await d.call("NetworkDriver.DeleteEndpoint", { NetworkID: NET, EndpointID: EP })).body).toEqual({})
    ip(node, "link", "delete", legacyOther)
    expect(listLinks(node, "c")).toEqual([])
  })

  it("a Netavark network named a:b is refused at create and at setup, saying what a name may hold", () => {
    const before = listLinks(node, "c")
    const create = netavark(["create"], podmanNetwork("a:b"))
    expect(create.exitCode).toBe(1)
    expect(JSON.parse(create.stdout).error).toMatch(/network name "a:b" is invalid: use .*letters, digits, "_", "\." and "-", starting with a letter or digit/)
    const ctr = scope.create("ab")
    const setup = netavark(["setup", netnsPath(ctr)], {
      container_id: "cd".repeat(32),
      network: podmanNetwork("a:b"),
      network_options: { interface_name: "eth0", static_ips: ["10.239.2.6"] }
    })
    expect(setup.exitCode).toBe(1)
    expect(JSON.parse(setup.stdout).error).toMatch(/network name "a:b" is invalid/)
    expect(listLinks(node, "c")).toEqual(before)
    expect(listLinks(ctr, "eth0")).toEqual([])
  })
})

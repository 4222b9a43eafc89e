import { listLinks, netnsPath, netnsScope } from "@containerscale/testing"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { execFile, execFileSync } from "node:child_process"
import { promisify } from "node:util"
import { call, network, runPlugin } from "./helpers.ts"

/**
 * Router mode, by hand: the plugin runs inside a throwaway "node" namespace (so the host's links
 * stay untouched) and wires throwaway container namespaces with the addresses "Podman" chose.
 */

const execFileAsync = promisify(execFile)
const scope = netnsScope()
const node = scope.create("node")
afterAll(() => scope.dispose())

const inNode = { node }
const ping = (from: string, to: string) => execFileAsync("ip", ["netns", "exec", from, "busybox", "ping", "-c", "1", "-W", "3", to])
const nodeLinks = () => listLinks(node, "cs")
const addrs = (ns: string, dev: string) =>
  (JSON.parse(execFileSync("ip", ["-n", ns, "-j", "addr", "show", "dev", dev], { encoding: "utf8" })) as Array<any>)[0]
const net = network({ mode: "router", mtu: "1280" })

describe("containerscale-netavark router mode", () => {
  it("wires two containers through the node with Podman's addresses; they reach each other; teardown is idempotent", async () => {
    const [a, b] = [scope.create("a"), scope.create("b")]
    const ca = call("aa", "web", net, ["10.237.1.5"])
    const cb = call("bb", "db", net, ["10.237.1.6"])
    const sa = await runPlugin(["setup", netnsPath(a)], ca, inNode)
    const sb = await runPlugin(["setup", netnsPath(b)], cb, inNode)
    assert.strictEqual(sa.exitCode, 0, sa.stdout + sa.stderr)
    assert.strictEqual(sb.exitCode, 0, sb.stdout + sb.stderr)
    const eth0 = addrs(a, "eth0")
    assert.deepStrictEqual(sa.json, {
      dns_search_domains: [],
      dns_server_ips: [],
      interfaces: { eth0: { mac_address: eth0.address, subnets: [{ ipnet: "10.237.1.5/24", gateway: "10.237.1.1" }] } }
    })
    assert.match(eth0.address, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/)
    assert.strictEqual(eth0.mtu, 1280)
    assert.deepStrictEqual(eth0.addr_info.filter((i: any) => i.family === "inet").map((i: any) => `${i.local}/${i.prefixlen}`), ["10.237.1.5/24"])
    assert.strictEqual(nodeLinks().length, 2)
    await ping(a, "10.237.1.6")
    await ping(b, "10.237.1.5")

    for (let i = 0; i < 2; i++) {
      const t = await runPlugin(["teardown", netnsPath(a)], ca, inNode)
      assert.strictEqual(t.exitCode, 0, t.stdout)
      assert.strictEqual(t.stdout, "")
    }
    assert.deepStrictEqual(listLinks(a, "eth0"), [])
    assert.strictEqual(nodeLinks().length, 1)
    // the namespace is gone (netavark >= 2.1 still calls teardown)
    execFileSync("ip", ["netns", "delete", b])
    const gone = await runPlugin(["teardown", netnsPath(b)], cb, inNode)
    assert.strictEqual(gone.exitCode, 0, gone.stdout)
    assert.deepStrictEqual(nodeLinks(), [])
    // never set up
    const never = await runPlugin(["teardown", netnsPath(a)], call("cc", null, net, null), inNode)
    assert.strictEqual(never.exitCode, 0, never.stdout)
  })

  it("another interface name, an MTU and extra routes; 2.0-style input without null fields", async () => {
    const c = scope.create("c")
    const net2 = {
      name: "csnet2", id: "d".repeat(64), driver: "containerscale-netavark", internal: false, ipv6_enabled: false, dns_enabled: false,
      subnets: [{ subnet: "10.237.2.0/24", gateway: "10.237.2.1" }], options: { mtu: "1400" },
      routes: [{ destination: "192.0.2.0/24", gateway: "10.237.2.254" }]
    }
    const input = { container_id: "e".repeat(64), network: net2, network_options: { interface_name: "eth1", static_ips: ["10.237.2.9"] } }
    const s = await runPlugin(["setup", netnsPath(c)], input, inNode)
    assert.strictEqual(s.exitCode, 0, s.stdout)
    assert.deepStrictEqual(Object.keys(s.json.interfaces), ["eth1"])
    assert.strictEqual(addrs(c, "eth1").mtu, 1400)
    const routes = execFileSync("ip", ["-n", c, "route"], { encoding: "utf8" })
    assert.match(routes, /default via 10\.237\.2\.1 dev eth1/)
    // only the node is on-link: the route goes through it
    assert.match(routes, /192\.0\.2\.0\/24 via 10\.237\.2\.1 dev eth1/)
    assert.include(s.stderr, "goes through the node")
    assert.strictEqual((await runPlugin(["teardown", netnsPath(c)], input, inNode)).exitCode, 0)
    assert.deepStrictEqual(nodeLinks(), [])
  })

  it("a failed setup leaves nothing behind", async () => {
    const d = scope.create("d")
    // the interface name is taken inside the container
    execFileSync("ip", ["-n", d, "link", "add", "eth0", "type", "veth", "peer", "name", "x0"])
    const taken = await runPlugin(["setup", netnsPath(d)], call("dd", "x", net, ["10.237.1.7"]), inNode)
    assert.strictEqual(taken.exitCode, 1)
    assert.include(taken.json.error, "eth0 already exists")
    assert.deepStrictEqual(nodeLinks(), [])
    // an address outside the subnets, none at all
    const outside = await runPlugin(["setup", netnsPath(d)], call("dd", "x", net, ["10.9.9.9"]), inNode)
    assert.include(outside.json.error, "in none of the network's subnets")
    const none = await runPlugin(["setup", netnsPath(d)], call("dd", "x", net, null), inNode)
    assert.include(none.json.error, "static_ips is empty")
    const badOpt = await runPlugin(["setup", netnsPath(d)], call("dd", "x", network({ bogus: "1" }), ["10.237.1.7"]), inNode)
    assert.include(badOpt.json.error, 'unknown option "bogus"')
    assert.deepStrictEqual(nodeLinks(), [])
    assert.deepStrictEqual(listLinks(d, "eth0"), ["eth0"])
  })

  it("a second setup of the same attachment is refused and does not break the first", async () => {
    const e = scope.create("e")
    const ce = call("ee", "x", net, ["10.237.1.8"])
    assert.strictEqual((await runPlugin(["setup", netnsPath(e)], ce, inNode)).exitCode, 0)
    const again = await runPlugin(["setup", netnsPath(e)], ce, inNode)
    assert.strictEqual(again.exitCode, 1)
    assert.include(again.json.error, "already attached")
    assert.strictEqual(nodeLinks().length, 1)
    assert.strictEqual((await runPlugin(["teardown", netnsPath(e)], ce, inNode)).exitCode, 0)
    assert.deepStrictEqual(nodeLinks(), [])
  })
})

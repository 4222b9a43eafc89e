import { makeMemberMemory } from "@containerscale/core/memory"
import { afterAll, assert, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import { memberPlugin } from "../src/member.ts"
import { runSkel } from "../src/skel.ts"

/**
 * The member plugin's CNI side (results, MagicDNS, CHECK, GC, errors) over the in-memory `Member`,
 * without tailscaled or a namespace; the end-to-end tests run it against real daemons.
 */

// the plugin asks only that the namespace exists as a file (a namespace is a bind-mounted file); the Member here is in memory
const netns = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "cs-member-unit-")), "netns")
fs.writeFileSync(netns, "")
afterAll(() => fs.rmSync(path.dirname(netns), { recursive: true, force: true }))

const prevResult = {
  cniVersion: "1.1.0",
  interfaces: [{ name: "eth0", sandbox: "/var/run/netns/unit" }],
  ips: [{ address: "10.88.0.5/16", interface: 0 }],
  dns: { nameservers: ["10.88.0.1"], search: ["cluster.local"] }
}

const call = (command: string, config: Record<string, unknown>, env: Record<string, string> = {}) =>
  runSkel(memberPlugin, {
    env: {
      CNI_COMMAND: command,
      CNI_CONTAINERID: "unit1",
      CNI_IFNAME: "eth0",
      CNI_NETNS: netns,
      CNI_PATH: "/opt/cni/bin",
      CNI_ARGS: "K8S_POD_NAME=web",
      ...env
    },
    stdin: JSON.stringify({ cniVersion: "1.1.0", name: "unit", type: "containerscale", prevResult, ...config })
  })

describe("the member plugin over the in-memory Member", () => {
  it.effect("ADD adds tailscale0, its addresses and MagicDNS first; CHECK passes; DEL leaves; GC collects", () => {
    const memory = makeMemberMemory()
    return Effect.gen(function*() {
      const add = yield* call("ADD", { authKey: "k" })
      assert.strictEqual(add.exitCode, 0, add.stdout)
      const result = JSON.parse(add.stdout)
      assert.deepStrictEqual(result.interfaces.map((i: { name: string }) => i.name), ["eth0", "tailscale0"])
      assert.match(result.interfaces[1].mac, /^02:00:/)
      assert.deepStrictEqual(result.ips.slice(1).map((ip: { address: string; interface: number }) => [ip.address, ip.interface]), [
        ["100.64.0.1/32", 1],
        ["fd7a:115c:a1e0::1/128", 1]
      ])
      assert.deepStrictEqual(result.dns, { nameservers: ["100.100.100.100", "10.88.0.1"], search: ["tailnet.test", "cluster.local"] })
      assert.deepStrictEqual([...memory.tailnet.nodes.keys()], ["unit/unit1/eth0"])

      const check = yield* call("CHECK", { authKey: "k", prevResult: { ...result, cniVersion: "1.1.0" } })
      assert.strictEqual(check.exitCode, 0, check.stdout)
      assert.strictEqual((yield* call("DEL", {})).exitCode, 0)
      assert.strictEqual(memory.tailnet.nodes.size, 0)
      const lost = yield* call("CHECK", { prevResult: { ...result, cniVersion: "1.1.0" } })
      assert.strictEqual(JSON.parse(lost.stdout).code, 104)

      yield* call("ADD", { authKey: "k" })
      const gc = yield* runSkel(memberPlugin, {
        env: { CNI_COMMAND: "GC", CNI_PATH: "/opt/cni/bin" },
        stdin: JSON.stringify({ cniVersion: "1.1.0", name: "unit", type: "containerscale", "cni.dev/valid-attachments": [] })
      })
      assert.strictEqual(gc.exitCode, 0, gc.stdout)
      assert.strictEqual(memory.tailnet.nodes.size, 0)
    }).pipe(Effect.provide(memory.layer))
  })

  it.effect("no MagicDNS when magicDns is false, no device in userspace networking; a bad option is code 7 and joins nothing", () => {
    const memory = makeMemberMemory()
    return Effect.gen(function*() {
      const result = JSON.parse((yield* call("ADD", { authKey: "k", magicDns: false, userspace: true })).stdout)
      assert.deepStrictEqual(result.interfaces.map((i: { name: string }) => i.name), ["eth0"])
      assert.deepStrictEqual(result.dns, prevResult.dns)
      assert.isUndefined(result.ips[1].interface)
      const bad = yield* call("ADD", { authKey: "k", loginServer: "ftp://x" }, { CNI_CONTAINERID: "unit2" })
      assert.strictEqual(bad.exitCode, 1)
      assert.strictEqual(JSON.parse(bad.stdout).code, 7)
      assert.include(JSON.parse(bad.stdout).msg, "loginServer must be an http(s) URL")
      assert.strictEqual(memory.tailnet.nodes.size, 1)
    }).pipe(Effect.provide(memory.layer))
  })
})

import { execPlugin, netnsPath } from "@containerscale/testing"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import { type MemberStandIn, startMemberStandIn } from "./member-stand-in.ts"

/**
 * Persistent identities through the compiled `containerscale` plugin (member mode, the stand-in
 * tailscaled and the testnet control server): workloads whose names earlier versions turned into
 * the same folder name are two folders and two nodes, and each comes back as its own node.
 */

let stand: MemberStandIn
let node = "", stateDir = "", members = "", BIN = "", TAILSCALED = "", key = ""
let testnet: MemberStandIn["testnet"]
let scope: MemberStandIn["scope"]
const daemons = () => stand.daemons()

beforeAll(async () => {
  stand = await startMemberStandIn("member-identity", { ephemeral: false })
  ;({ scope, node, stateDir, members, bin: BIN, tailscaled: TAILSCALED, testnet, key } = stand)
})

afterAll(() => stand?.close())

const call = (command: "ADD" | "DEL", network: string, containerId: string, ctr: string, pod: string) =>
  execPlugin(BIN, {
    command,
    containerId,
    netns: netnsPath(ctr),
    ifname: "eth0",
    args: { IgnoreUnknown: "1", K8S_POD_NAME: pod },
    runIn: node,
    env: { CONTAINERSCALE_AUTH_KEY: key }
  }, {
    cniVersion: "1.0.0",
    name: network,
    type: "containerscale",
    loginServer: testnet.loginServer,
    tailscaledPath: TAILSCALED,
    stateDir,
    ephemeral: false,
    userspace: true,
    timeoutSeconds: 15,
    ...(command === "ADD" ? { prevResult: { cniVersion: "1.0.0", interfaces: [], ips: [] } } : {})
  })

const tailnetIp = (out: { json: unknown }) => (out.json as { ips: Array<{ address: string }> }).ips[0]!.address

describe("member identities that earlier versions confused", () => {
  it("are two folders and two nodes, and each comes back as its own node", async () => {
    // network a + pod b_c and network a_b + pod c; pod web:1 and pod web_1 of one network
    const workloads = [["a", "b_c"], ["a_b", "c"], ["n", "web:1"], ["n", "web_1"]] as const
    const first = new Map<string, string>()
    const ctrs = workloads.map((_, i) => scope.create(`w${i}`))
    for (const [i, [network, pod]] of workloads.entries()) {
      const out = await call("ADD", network, `first${i}`, ctrs[i]!, pod)
      assert.strictEqual(out.exitCode, 0, `${network} ${pod}: ${out.stdout}`)
      first.set(`${network} ${pod}`, tailnetIp(out))
    }
    assert.strictEqual(fs.readdirSync(members).length, workloads.length, fs.readdirSync(members).join(" "))
    assert.strictEqual(new Set(first.values()).size, workloads.length, [...first.values()].join(" "))
    assert.strictEqual(testnet.nodes().length, workloads.length)
    assert.strictEqual(daemons().length, workloads.length)

    // every one leaves (its state kept) and comes back, in another container, as the same node
    for (const [i, [network, pod]] of workloads.entries()) {
      assert.strictEqual((await call("DEL", network, `first${i}`, ctrs[i]!, pod)).exitCode, 0)
    }
    assert.deepStrictEqual(daemons(), [])
    for (const [i, [network, pod]] of [...workloads.entries()].reverse()) {
      const out = await call("ADD", network, `again${i}`, ctrs[i]!, pod)
      assert.strictEqual(out.exitCode, 0, `${network} ${pod}: ${out.stdout}`)
      assert.strictEqual(tailnetIp(out), first.get(`${network} ${pod}`), `${network} ${pod} came back as another node`)
    }
    assert.strictEqual(testnet.nodes().length, workloads.length)
    for (const [i, [network, pod]] of workloads.entries()) {
      assert.strictEqual((await call("DEL", network, `again${i}`, ctrs[i]!, pod)).exitCode, 0)
    }
    assert.deepStrictEqual(daemons(), [])
  })
})

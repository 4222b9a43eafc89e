import { distBin, execPlugin, netnsPath, netnsScope, processesWith, startTestnet, testingBin, type Testnet } from "@containerscale/testing"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

/**
 * Persistent identities through the compiled `containerscale` plugin (member mode, the stand-in
 * tailscaled and the testnet control server): workloads whose names earlier versions turned into
 * the same folder name are two folders and two nodes, and each comes back as its own node.
 */

const scope = netnsScope()
const node = scope.create("node")
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-member-identity-"))
const stateDir = path.join(dir, "state")
const members = path.join(stateDir, "member")
// copies, so a build running meanwhile (it replaces dist/) cannot fail an exec here
const BIN = path.join(dir, "containerscale")
const TAILSCALED = path.join(dir, "tailscaled")
let testnet: Testnet
let key = ""

const daemons = () => processesWith(`--socket=${stateDir}/`)

beforeAll(async () => {
  fs.copyFileSync(path.join(distBin(), "containerscale"), BIN)
  fs.copyFileSync(path.join(testingBin(), "tailscaled"), TAILSCALED)
  fs.chmodSync(BIN, 0o755)
  fs.chmodSync(TAILSCALED, 0o755)
  testnet = await startTestnet({ stateDir: path.join(dir, "testnet") })
  key = await testnet.createAuthKey({ reusable: true, ephemeral: false })
})

afterAll(async () => {
  for (const pid of daemons()) process.kill(pid, "SIGKILL")
  await testnet?.close()
  scope.dispose()
  fs.rmSync(dir, { recursive: true, force: true })
})

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

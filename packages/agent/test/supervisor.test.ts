import { memberRoot } from "@containerscale/core"
import * as Log from "@containerscale/core/log"
import { listMembers, makeLocalApi, type MemberRecord } from "@containerscale/core/member"
import { execPlugin, netnsPath, netnsScope, startTestnet, type Testnet } from "@containerscale/testing"
import { distBin, testingBin } from "@containerscale/sandbox"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { makeSupervisor } from "../src/supervisor.ts"
import { runWith } from "./services.ts"

/** The agent's supervisor against members made by the real plugin with the stand-in tailscaled. */

const scope = netnsScope()
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-supervise-"))
const stateDir = path.join(dir, "state")
let testnet: Testnet
let key = ""

beforeAll(async () => {
  testnet = await startTestnet({ stateDir: path.join(dir, "testnet") })
  key = await testnet.createAuthKey({ reusable: true, ephemeral: true })
})

afterAll(async () => {
  for (const m of listMembers(memberRoot(stateDir))) if (m.pid !== undefined) process.kill(m.pid, "SIGKILL")
  await testnet?.close()
  scope.dispose()
  fs.rmSync(dir, { recursive: true, force: true })
})

const addMember = async (containerId: string, netns: string) => {
  const out = await execPlugin(
    path.join(distBin(), "containerscale"),
    { command: "ADD", containerId, netns: netnsPath(netns), ifname: "eth0", env: { CONTAINERSCALE_AUTH_KEY: key } },
    {
      cniVersion: "1.0.0", name: "sup", type: "containerscale", loginServer: testnet.loginServer, stateDir,
      tailscaledPath: path.join(testingBin(), "tailscaled"), userspace: true,
      prevResult: { cniVersion: "1.0.0", interfaces: [{ name: "eth0", sandbox: netnsPath(netns) }], ips: [] }
    }
  )
  assert.strictEqual(out.exitCode, 0, out.stdout)
  return out.json as { ips: Array<{ address: string }> }
}

/** The restarted daemon reconnects on its own from its state: poll its status until Running. */
const waitRunning = async (socket: string) => {
  for (let i = 0; i < 200; i++) {
    const answer = await Effect.runPromise(Effect.result(makeLocalApi({ socket }).status({ peers: false })))
    if (answer._tag === "Success" && answer.success.BackendState === "Running") return answer.success
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error(`${socket} never reached Running`)
}

const alive = (pid: number) => {
  try {
    return !fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.startsWith("Z")
  } catch {
    return false
  }
}

describe("member supervision", () => {
  it("restarts a tailscaled that died, as the same node with the same address", async () => {
    const ns = scope.create("s1")
    const result = await addMember("s1", ns)
    const [member] = listMembers(memberRoot(stateDir))
    process.kill(member!.pid!, "SIGKILL")
    for (let i = 0; i < 200 && alive(member!.pid!); i++) await new Promise((r) => setTimeout(r, 10))
    const log = Log.memory()
    const restarted: Array<MemberRecord> = []
    const supervisor = makeSupervisor({ stateDir, events: { restarted: (m) => restarted.push(m) } })
    await runWith(supervisor.pass, log)
    assert.strictEqual(restarted.length, 1)
    const [after] = listMembers(memberRoot(stateDir))
    assert.notStrictEqual(after!.pid, member!.pid)
    assert.isTrue(after!.running)
    const socket = path.join(memberRoot(stateDir), "sup_s1", "tailscaled.sock")
    const status = await waitRunning(socket)
    assert.deepStrictEqual(status.Self.TailscaleIPs, result.ips.map((ip) => ip.address.split("/")[0]))
    assert.strictEqual(testnet.nodes().length, 1)
    assert.isTrue(log.lines.some((l) => l.msg === "tailscaled restarted"))
    // a pass with everything alive changes nothing
    await runWith(supervisor.pass, log)
    assert.strictEqual(restarted.length, 1)
  })

  it("takes a member whose container namespace is gone off the tailnet and removes it", async () => {
    const [before] = listMembers(memberRoot(stateDir))
    execFileSync("ip", ["netns", "delete", path.basename(before!.netns)])
    const removed: Array<MemberRecord> = []
    await runWith(makeSupervisor({ stateDir, events: { removed: (m) => removed.push(m) } }).pass)
    assert.strictEqual(removed.length, 1)
    assert.deepStrictEqual(listMembers(memberRoot(stateDir)), [])
    assert.isFalse(alive(before!.pid!))
    assert.deepStrictEqual(testnet.nodes(), []) // logged out: the ephemeral node is gone
  })
})

import {
  type RealNode,
  type RealTailnet,
  startRealTailnet,
  type TailnetHost,
  cniPath
} from "@containerscale/sandbox"
import { listLinks, netnsPath, processesWith, runConflist, waitUntil, writableFor } from "@containerscale/testing"
import { afterAll, afterEach, assert, beforeAll, describe, it } from "@effect/vitest"
import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"

/**
 * What a member's tailscaled can reach on the node, against the real daemons: Headscale 0.29
 * with a policy that allows Tailscale SSH from the peer's user to the containers' tag, and a real
 * tailscaled peer in a host namespace of its own. A member's tailscaled shares only the
 * container's network namespace, so SSH is refused before a node joins, Taildrop lands in the
 * member's own folder, and the daemon can write nowhere else on the node.
 */

const execFileAsync = promisify(execFile)
const SUBNET = "10.236.44.0/24"
const NETWORK = "reach"
const USER = "reach"
const TAG = "tag:reach"
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-member-reach-"))
fs.chmodSync(dir, 0o700)
const stateDir = path.join(dir, "state")
const members = path.join(stateDir, "member")
let tailnet: RealTailnet
let node: TailnetHost
let peer: RealNode
let taggedKey = ""
let untaggedKey = ""
const containers: Array<ChildProcess> = []

const daemons = () => processesWith(`--socket=${stateDir}/`)
const killAll = (pids: ReadonlyArray<number>) => {
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL")
    } catch {
      // already gone
    }
  }
}

beforeAll(async () => {
  tailnet = await startRealTailnet({
    policy: {
      tagOwners: { [TAG]: [`${USER}@`] },
      acls: [{ action: "accept", src: ["*"], dst: ["*:*"] }],
      ssh: [{ action: "accept", src: [`${USER}@`], dst: [TAG], users: ["root"] }]
    }
  })
  node = tailnet.addHost("node", { routedSubnets: [SUBNET] })
  const user = await tailnet.createUser(USER)
  taggedKey = (await tailnet.createAuthKey({ user, reusable: true, ephemeral: true, tags: [TAG] })).key
  untaggedKey = (await tailnet.createAuthKey({ user, reusable: true, ephemeral: true })).key
  peer = await tailnet.startNode("peer", { host: tailnet.addHost("peer"), authKey: (await tailnet.createAuthKey({ user, ephemeral: true })).key })
}, 900_000)

afterEach(async () => {
  killAll(daemons())
  killAll(containers.splice(0).flatMap((c) => (c.pid === undefined ? [] : [c.pid])))
  for (const n of (await tailnet?.nodes()) ?? []) {
    if (n.given_name !== "peer" && n.name !== "peer") await tailnet.headscale(["nodes", "delete", "--identifier", String(n.id), "--force"])
  }
}, 60_000)

afterAll(async () => {
  killAll(daemons())
  await tailnet?.close()
  fs.rmSync(dir, { recursive: true, force: true })
}, 120_000)

const conflist = (extra: Record<string, unknown>) => ({
  cniVersion: "1.0.0",
  name: NETWORK,
  plugins: [
    {
      type: "bridge", bridge: "csr0", isGateway: true, ipMasq: false,
      ipam: { type: "host-local", dataDir: path.join(dir, "host-local"), ranges: [[{ subnet: SUBNET }]], routes: [{ dst: "0.0.0.0/0" }] }
    },
    { type: "containerscale", loginServer: tailnet.loginServer, tailscaledPath: tailnet.runtime.tailscaled, stateDir, timeoutSeconds: 60, ...extra }
  ]
})

const cni = (command: "ADD" | "DEL", id: string, ctr: string, extra: Record<string, unknown>, pod: string, key = taggedKey) =>
  runConflist(conflist(extra), command, {
    containerId: id,
    netns: netnsPath(ctr),
    ifname: "eth0",
    path: cniPath(),
    runIn: node.netns,
    cacheDir: path.join(dir, "cache"),
    args: { IgnoreUnknown: "1", K8S_POD_NAME: pod },
    env: { CONTAINERSCALE_AUTH_KEY: key },
    timeoutMs: 180_000
  })

const tailnetIpv4 = (result: unknown) =>
  (result as { ips: ReadonlyArray<{ address: string }> }).ips.map((ip) => ip.address.split("/")[0]!).find((a) => a.startsWith("100."))!

const folders = () => (fs.existsSync(members) ? fs.readdirSync(members).sort() : [])
const nodeNamed = async (name: string) => (await tailnet.nodes()).find((n) => (n.given_name ?? n.name) === name)

/** What a process sees of itself: its mount, PID and UTS namespaces and its host name. */
const VIEW = "readlink /proc/self/ns/mnt /proc/self/ns/pid /proc/self/ns/uts; hostname"

/**
 * A container in `ctr`: a process with mount, PID, UTS and IPC namespaces of its own and a host
 * name of its own; returns what it sees of itself.
 */
const startContainer = async (ctr: string): Promise<string> => {
  const seen = path.join(dir, `${ctr}.view`)
  const child = spawn("ip", [
    "netns", "exec", ctr, "unshare", "--mount", "--pid", "--uts", "--ipc", "--fork", "--mount-proc", "--",
    "sh", "-c", `hostname ${ctr} && { ${VIEW}; } > "$1.tmp" && mv "$1.tmp" "$1" && exec sleep 600`, "sh", seen
  ], { stdio: "ignore" })
  containers.push(child)
  return waitUntil(`the container in ${ctr}`, () => (fs.existsSync(seen) ? fs.readFileSync(seen, "utf8") : undefined), 10_000)
}

describe("what a member's tailscaled reaches on the node, with the real daemons", { timeout: 400_000 }, () => {
  it("Tailscale SSH is refused before the node joins; a member let through must put the session in the container", async () => {
    for (const [n, extra] of [{ tailscaleFlags: ["--ssh"] }, { ssh: true }].entries()) {
      const what = JSON.stringify(extra)
      const ctr = tailnet.scope.create(`ssh${n}`)
      const container = await startContainer(ctr)
      const out = await cni("ADD", "ssh", ctr, extra, "ssh-target")
      if (out.ok) {
        // what an SSH session to the member runs in, from the peer over the tailnet
        try {
          const session = await waitUntil(`an SSH session from the peer (${what})`, async () =>
            (await execFileAsync("ip", [
              "netns", "exec", peer.host.netns, "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
              "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", `root@${tailnetIpv4(out.result)}`, VIEW
            ], { timeout: 30_000 })).stdout, 60_000)
          const nodeView = ["mnt", "pid", "uts"].map((ns) => fs.readlinkSync(`/proc/self/ns/${ns}`)).join(" ")
          assert.strictEqual(session, container, `${what}: the SSH session must run in the container's namespaces; the node's are ${nodeView} ${os.hostname()}`)
        } finally {
          await cni("DEL", "ssh", ctr, extra, "ssh-target")
        }
        continue
      }
      const error = out.error as { code: number; msg: string }
      assert.strictEqual(error.code, 7, `${what}: ${JSON.stringify(error)}`)
      assert.include(error.msg, "Tailscale SSH is refused in member mode", what)
      assert.include(error.msg, "run an SSH server in the container", what)
      assert.isUndefined(await nodeNamed("ssh-target"), `${what}: no node joined`)
      assert.deepStrictEqual(daemons(), [], what)
      assert.deepStrictEqual(folders(), [], what)
      const del = await cni("DEL", "ssh", ctr, extra, "ssh-target")
      assert.isTrue(del.ok, `${what}: DEL after the refused ADD: ${JSON.stringify(del.error)}`)
    }
  })

  it("a member's tailscaled keeps no other container's network namespace alive after its runtime deleted it", async () => {
    // a namespace that exists when the member starts, with a veth to another: the pair goes when the namespace really does
    const [victim, witness] = [tailnet.scope.create("victim"), tailnet.scope.create("witness")]
    execFileSync("ip", ["-n", victim, "link", "add", "v0", "type", "veth", "peer", "name", "w0", "netns", witness])
    const ctr = tailnet.scope.create("pin")
    const out = await cni("ADD", "pin", ctr, {}, "pin")
    assert.isTrue(out.ok, JSON.stringify(out.error))
    execFileSync("ip", ["netns", "delete", victim])
    await waitUntil("the deleted namespace's veth pair gone", () => (listLinks(witness, "w0").length === 0 ? true : undefined), 5_000)
    assert.isTrue((await cni("DEL", "pin", ctr, {}, "pin")).ok)
  })

  it("Taildrop lands in the member's own folder, or is refused; the daemon can write nowhere else on the node", async () => {
    const file = path.join(dir, "dropped-file.txt")
    fs.writeFileSync(file, "from the peer\n")
    const cases = [
      { pod: "drop-untagged", key: untaggedKey, lands: true },
      // a tagged node takes files only from peers the policy grants file-sharing-send
      { pod: "drop-tagged", key: taggedKey, lands: false }
    ]
    for (const c of cases) {
      const ctr = tailnet.scope.create(c.pod)
      const out = await cni("ADD", c.pod, ctr, {}, c.pod, c.key)
      assert.isTrue(out.ok, `${c.pod}: ${JSON.stringify(out.error)}`)
      const folder = path.join(members, `${NETWORK}_${c.pod}`)
      const [pid] = daemons()
      assert.isDefined(pid)

      const sent = await waitUntil(`a Taildrop file to ${c.pod}`, async () => {
        try {
          await peer.cli(["file", "cp", file, `${tailnetIpv4(out.result)}:`], 30_000)
          return "sent"
        } catch (e) {
          const message = (e as Error).message
          // the peer learns the member, and its file sharing API, a moment after it joined
          if (/unknown target|node not found|unrecognized peer|not advertising|no netmap|not connected/.test(message)) return undefined
          return `refused: ${message.split("\n")[0]}`
        }
      }, 60_000)
      const received = () => fs.globSync("files/**/dropped-file.txt", { cwd: folder })
      if (c.lands) {
        assert.strictEqual(sent, "sent", c.pod)
        await waitUntil(`the file in ${folder}`, () => (received().length > 0 ? true : undefined), 30_000)
        assert.strictEqual(fs.readFileSync(path.join(folder, received()[0]!), "utf8"), "from the peer\n")
      } else {
        assert.match(sent, /^refused: .*owned by a different user/, c.pod)
        // past the sender's own check, straight to the member's peer API: the member refuses it too
        const own = await execFileAsync(tailnet.runtime.tailscale, [`--socket=${path.join(folder, "tailscaled.sock")}`, "status", "--json"])
        const api = (JSON.parse(own.stdout) as { Self: { PeerAPIURL?: ReadonlyArray<string> } }).Self.PeerAPIURL?.[0]
        assert.isDefined(api, `${c.pod}: the member's peer API`)
        const put = await execFileAsync("ip", [
          "netns", "exec", peer.host.netns, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T", file, `${api}/v0/put/dropped-file.txt`
        ], { timeout: 30_000 })
        assert.strictEqual(put.stdout, "403", `${c.pod}: the member's answer to a direct PUT`)
        assert.deepStrictEqual(received(), [], c.pod)
      }

      const probes = ["/", "/var/lib", "/root", "/usr/local/bin", os.tmpdir(), dir, stateDir, members, folder]
      assert.deepStrictEqual(writableFor(pid!, probes), [folder], `${c.pod}: only its own folder is writable`)
      assert.deepStrictEqual(writableFor(pid!, ["/etc", "/run"]), ["/etc", "/run"], `${c.pod}: its private /etc and /run`)
      assert.isFalse(fs.existsSync(`/proc/${pid}/root/run/netns`), `${c.pod}: the node's /run is out of view`)
      assert.deepStrictEqual(fs.readdirSync("/etc").filter((f) => f.startsWith(".containerscale-probe")), [])

      const del = await cni("DEL", c.pod, ctr, {}, c.pod, c.key)
      assert.isTrue(del.ok, `${c.pod}: ${JSON.stringify(del.error)}`)
      assert.deepStrictEqual(folders(), [], `${c.pod}: the member's folder, files included, goes with DEL`)
    }
  })
})


import {
  type CreatedAuthKey,
  type Podman5Sandbox,
  podman5Sandbox,
  type RealNode,
  type RealTailnet,
  startMemberTestbed,
  type TailnetHost,
  distBin
} from "@containerscale/sandbox"
import {
  cleanUpAll,
  type CommandLineWatch,
  listLinks,
  processAlive,
  processesInNetns,
  processesWith,
  ticksNow,
  uniquePrefix,
  waitUntil,
  watchCommandLines,
  writableFor
} from "@containerscale/testing"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { promisify } from "node:util"

/**
 * containerscale-netavark in member mode under Podman 5.4 and netavark 1.14 (the cached trixie
 * chroot) against the real daemons: Headscale 0.29 and DERP in the real tailnet fixture's hub,
 * tailscaled 1.102 in the container, a real tailscaled peer on another host. Podman runs in the
 * fixture's "node" host namespace, which the hub routes the containers' subnet to.
 *
 * A sandbox's `sh` call is one private /run for podman, so one script runs the container's whole
 * life: it starts the container, reports its pid in `up`, and removes it once the test writes `go`.
 */

const execFileAsync = promisify(execFile)
const DRIVER = "containerscale-netavark"
const PLUGIN = path.join(distBin(), "containerscale-netavark")
const SUBNET = "10.239.70.0/24"
const TAGS = ["tag:podman"]
const prefix = uniquePrefix()

let tailnet: RealTailnet | undefined
let node: TailnetHost
let peerHost: TailnetHost
let peer: RealNode
let key: CreatedAuthKey
let pm: Podman5Sandbox | undefined

/** The member tailscaleds the plugin started for this sandbox's state dir. */
const tailscaleds = () => (pm === undefined ? [] : processesWith(`--socket=${pm.paths.state}/`))

let watcher: CommandLineWatch | undefined

beforeAll(async () => {
  if (!fs.existsSync(PLUGIN)) throw new Error(`${PLUGIN} is missing: flock /tmp/cs-build.lock npm run build`)
  const bed = await startMemberTestbed({ prefix: `${prefix}-`, subnet: SUBNET, user: "podman", tags: TAGS })
  tailnet = bed.tailnet
  node = bed.node
  peerHost = bed.peerHost
  peer = bed.peer
  key = bed.key
  // the first run on a machine builds the chroot (debootstrap, a few minutes); later runs find it cached
  pm = await podman5Sandbox({
    prefix,
    plugins: { [DRIVER]: PLUGIN },
    binaries: { tailscaled: tailnet.runtime.tailscaled },
    netns: node.netns
  })
}, 1_500_000)

afterAll(() =>
  cleanUpAll([
    () => watcher?.stop(),
    // the member tailscaled is netavark's child, outside the containers' cgroups: end it by pid
    () => tailscaleds().forEach((pid) => process.kill(pid, "SIGKILL")),
    () => pm?.dispose(),
    () => tailnet?.close()
  ]), 180_000)

describe("containerscale-netavark member mode under podman 5 on a real tailnet", () => {
  it("a container joins Headscale as its own tagged node, reaches a real peer over WireGuard, keeps the key out of sight, and leaves on rm", async () => {
    const p = pm!
    const files = p.paths.files
    const keyFile = path.join(files, "auth-key")
    const upFile = path.join(files, "up")
    const goFile = path.join(files, "go")
    fs.writeFileSync(keyFile, `${key.key}\n`, { mode: 0o600 })
    watcher = watchCommandLines(keyFile)
    await watcher.ready
    const net = `${prefix}-member`
    const name = `${prefix}-pa`
    const opts = [
      "mode=member",
      `login_server=${tailnet!.loginServer}`,
      `auth_key_file=${keyFile}`,
      `tailscaled_path=${path.join(p.paths.bin, "tailscaled")}`,
      `tags=${TAGS.join(",")}`,
      `state_dir=${p.paths.state}`,
      "timeout=90"
    ].map((o) => `-o ${o}`).join(" ")
    const script = `
      cleanup() { podman rm -f -t 0 -a >/dev/null 2>&1 || true; podman network rm -f ${net} >/dev/null 2>&1 || true; }
      trap cleanup EXIT
      podman network create -d ${DRIVER} --subnet ${SUBNET} ${opts} ${net} >/dev/null
      podman run -d --cgroup-parent=${p.cgroupParent} --name ${name} --network ${net} ${p.image} sleep 600 >/dev/null
      PID=$(podman inspect -f '{{.State.Pid}}' ${name})
      NETNS=$(podman inspect -f '{{.NetworkSettings.SandboxKey}}' ${name})
      echo "netns: $NETNS"
      echo "netns-up: $(ls /run/netns)"
      echo "resolv: $(tr '\\n' ';' < /proc/$PID/root/etc/resolv.conf)"
      echo "$PID" > ${upFile}.tmp && mv ${upFile}.tmp ${upFile}
      i=0; while [ ! -e ${goFile} ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i + 1)); done
      podman rm -f -t 0 ${name} >/dev/null
      podman network rm ${net} >/dev/null
      echo "netns-down: $(ls /run/netns)"
      echo "networks: $(podman network ls -q | grep -c ${prefix} || true)"
    `
    const ran = p.sh(script, { timeoutMs: 420_000 })
    let released = false
    const release = async () => {
      if (!released) fs.writeFileSync(goFile, "")
      released = true
      return ran
    }
    try {
      const ctrPid = await Promise.race([
        waitUntil("podman run to finish", () => (fs.existsSync(upFile) ? Number(fs.readFileSync(upFile, "utf8").trim()) : undefined), 240_000),
        ran.then((r) => Promise.reject(new Error(`the podman script ended early (${r.code}):\n${r.stdout}\n${r.stderr}`)))
      ])
      const nodeNamed = async () => (await tailnet!.nodes()).find((n) => n.name === name && n.online === true)
      const joined = await waitUntil("the container's node online in Headscale", nodeNamed, 60_000)
      const tailnetIp = joined.ip_addresses?.find((ip) => ip.startsWith("100."))
      assert.match(tailnetIp!, /^100\.\d+\.\d+\.\d+$/)
      assert.deepStrictEqual([...(joined.tags ?? [])].sort(), TAGS)
      const inContainer = (argv: ReadonlyArray<string>) =>
        execFileAsync("nsenter", ["-t", String(ctrPid), "-n", ...argv], { timeout: 60_000 })
      const { stdout: addrs } = await inContainer(["ip", "-o", "-4", "addr", "show", "tailscale0"])
      assert.include(addrs, `inet ${tailnetIp}/32`)

      // the container reaches the peer, and the peer the container, over a direct WireGuard path
      const peerIp = ((await peer.status()).Self.TailscaleIPs as Array<string>).find((ip) => ip.startsWith("100."))!
      const { stdout: ping } = await inContainer(["busybox", "ping", "-c", "2", "-W", "15", peerIp])
      assert.match(ping, /[12] packets received/)
      const pong = await peer.cli(["ping", "--c", "20", "--until-direct", tailnetIp!], 90_000)
      assert.match(pong, new RegExp(`pong from ${name} .* via 10\\.239\\.70\\.\\d+:\\d+`))
      await execFileAsync("ip", ["netns", "exec", peerHost.netns, "busybox", "ping", "-c", "1", "-W", "15", tailnetIp!], { timeout: 60_000 })
      // the plugin's status block gave Podman MagicDNS, which the member's tailscaled answers
      const { stdout: lookup } = await inContainer(["busybox", "nslookup", `peer.${tailnet!.baseDomain}`, "100.100.100.100"])
      assert.include(lookup, peerIp)

      // the key: not in the member tailscaled's environment, in no file of the member (command lines: below)
      const daemons = tailscaleds()
      assert.strictEqual(daemons.length, 1)
      const pid = daemons[0]!
      assert.strictEqual(fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim(), "tailscaled")
      const containerNs = fs.readlinkSync(`/proc/${pid}/ns/net`)
      assert.strictEqual(containerNs, fs.readlinkSync(`/proc/${ctrPid}/ns/net`))
      const environ = fs.readFileSync(`/proc/${pid}/environ`, "utf8")
      assert.include(environ, "TS_NO_LOGS_NO_SUPPORT=true")
      assert.notInclude(environ, key.key)
      assert.notInclude(environ, "CONTAINERSCALE_")
      const memberRoot = path.join(p.paths.state, "member")
      const memberDirs = fs.readdirSync(memberRoot)
      assert.strictEqual(memberDirs.length, 1)
      const memberDir = path.join(memberRoot, memberDirs[0]!)
      for (const f of ["tailscaled.log", "attachment.json"]) assert.notInclude(fs.readFileSync(path.join(memberDir, f), "utf8"), key.key)
      // the member's tailscaled writes only its own folder
      assert.deepStrictEqual(writableFor(pid, ["/", "/var/lib", p.dir, p.paths.state, memberRoot, memberDir]), [memberDir])
      const stored = fs.readFileSync(path.join(p.dir, "etc", "networks", `${net}.json`), "utf8")
      assert.include(stored, keyFile)
      assert.notInclude(stored, key.key)

      const removing = ticksNow()
      const r = await release()
      assert.strictEqual(r.code, 0, r.stdout + r.stderr)
      assert.notInclude(r.stdout + r.stderr, key.key)
      const out = Object.fromEntries(r.stdout.trim().split("\n").map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1).trim()]))
      const netnsName = path.basename(out["netns"]!)
      assert.include(out["netns-up"]!.split(/\s+/), netnsName)
      assert.notInclude(out["netns-down"]!.split(/\s+/), netnsName)
      assert.strictEqual(out["networks"], "0")
      assert.deepStrictEqual(out["resolv"]!.split(";").filter((l) => l !== ""), [`search ${tailnet!.baseDomain}`, "nameserver 100.100.100.100"])

      await waitUntil("the ephemeral node to leave Headscale", async () => ((await tailnet!.nodes()).some((n) => n.name === name) ? undefined : true), 30_000)
      assert.deepStrictEqual((await tailnet!.nodes()).map((n) => n.name), ["peer"])
      await waitUntil("tailscaled to exit", () => (tailscaleds().length === 0 && !processAlive(pid) ? true : undefined), 15_000)
      assert.deepStrictEqual(processesInNetns(containerNs, removing), [])
      assert.isFalse(fs.existsSync(memberDir))
      assert.deepStrictEqual(listLinks(node.netns, "cs"), [])
      assert.deepStrictEqual(await watcher.stop(), [])
    } finally {
      await release()
    }
  }, 600_000)

  it("refuses Tailscale SSH when the network is created, before any container joins", async () => {
    const net = `${prefix}-ssh`
    const r = await pm!.sh(`podman network create -d ${DRIVER} --subnet ${SUBNET} -o mode=member -o ssh=true ${net}`, { timeoutMs: 60_000 })
    assert.notStrictEqual(r.code, 0, r.stdout)
    assert.match(r.stderr, /option ssh: Tailscale SSH is refused in member mode.*run an SSH server in the container/)
    assert.strictEqual((await pm!.sh(`podman network ls -q --filter name=${net}`, { timeoutMs: 60_000 })).stdout.trim(), "")
    assert.deepStrictEqual(tailscaleds(), [])
  }, 120_000)
})

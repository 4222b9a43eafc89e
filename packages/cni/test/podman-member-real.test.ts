import {
  type CreatedAuthKey,
  libcniCacheFiles,
  type PodmanSandbox,
  podmanSandbox,
  type RealNode,
  type RealTailnet,
  startMemberTestbed,
  type TailnetHost,
  distBin,
  referencePluginDir
} from "@containerscale/sandbox"
import {
  cleanUpAll,
  type CommandLineWatch,
  listLinks,
  listNetns,
  netnsPath,
  processAlive,
  processesWith,
  uniquePrefix,
  waitUntil,
  watchCommandLines
} from "@containerscale/testing"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

/**
 * Rootful Podman 4.3 with its CNI backend, on the chain bridge (the reference plugin) then
 * containerscale in member mode, against the real daemons: Headscale 0.29 and DERP in the real
 * tailnet fixture's hub, tailscaled 1.102 in the container, a real tailscaled peer on another
 * host. Podman runs in the fixture's "node" host namespace, which the hub routes the containers'
 * subnet to. The conflist names the key as `file:PATH`, so the key is in neither the config nor
 * any command line.
 */

const execFileAsync = promisify(execFile)
const prefix = uniquePrefix()
const SUBNET = "10.236.70.0/24"
const TAGS = ["tag:podman"]
const network = `${prefix}-member`
const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-pmreal-`))
const stateDir = path.join(dir, "members")
const keyFile = path.join(dir, "authkey")

let tailnet: RealTailnet | undefined
let node: TailnetHost
let peerHost: TailnetHost
let peer: RealNode
let key: CreatedAuthKey
let pm: PodmanSandbox | undefined

/** The member tailscaleds the plugin started under this file's state dir. */
const tailscaleds = () => processesWith(`--socket=${stateDir}/`)

let watcher: CommandLineWatch | undefined

beforeAll(async () => {
  const bed = await startMemberTestbed({ prefix: `${prefix}-`, subnet: SUBNET, user: "podman", tags: TAGS })
  tailnet = bed.tailnet
  node = bed.node
  peerHost = bed.peerHost
  peer = bed.peer
  key = bed.key
  fs.writeFileSync(keyFile, `${key.key}\n`, { mode: 0o600 })
  const { loginServer, runtime } = tailnet
  pm = podmanSandbox({
    prefix,
    network,
    netns: netnsPath(node.netns),
    cniPluginDirs: [distBin(), referencePluginDir],
    conflist: (d) => ({
      cniVersion: "0.4.0",
      name: network,
      plugins: [
        {
          type: "bridge", bridge: `${prefix}br`, isGateway: true, ipMasq: false,
          ipam: { type: "host-local", dataDir: path.join(d, "host-local"), ranges: [[{ subnet: SUBNET }]], routes: [{ dst: "0.0.0.0/0" }] }
        },
        {
          type: "containerscale",
          authKey: `file:${keyFile}`,
          loginServer,
          tailscaledPath: runtime.tailscaled,
          tags: TAGS,
          stateDir,
          timeoutSeconds: 90
        }
      ]
    })
  })
}, 900_000)

afterAll(() =>
  cleanUpAll([
    () => watcher?.stop(),
    () => pm?.dispose(),
    () => tailscaleds().forEach((pid) => process.kill(pid, "SIGKILL")),
    () => tailnet?.close(),
    () => fs.rmSync(dir, { recursive: true, force: true })
  ]), 180_000)

describe("podman 4.3 (CNI) with bridge + containerscale member mode on a real tailnet", { timeout: 300_000 }, () => {
  it("a container joins Headscale as its own tagged node, reaches a real peer over WireGuard, keeps the key out of sight, and leaves on rm", async () => {
    const p = pm!
    const name = `${prefix}-ca`
    watcher = watchCommandLines(keyFile)
    await watcher.ready
    p.podman(["run", "-d", "--name", name, "--network", network, p.image, "sleep", "600"])
    const sandboxKey = p.podman(["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", name]).trim()
    expect(sandboxKey).toMatch(/^\/run\/netns\/netns-/)
    const containerNetns = path.basename(sandboxKey)
    expect(listNetns()).toContain(containerNetns)

    const joined = await waitUntil(
      "the container's node online in Headscale",
      async () => (await tailnet!.nodes()).find((n) => n.name === name && n.online === true),
      30_000
    )
    const tailnetIp = joined.ip_addresses?.find((ip) => ip.startsWith("100."))
    expect(tailnetIp).toMatch(/^100\.\d+\.\d+\.\d+$/)
    expect([...(joined.tags ?? [])].sort()).toEqual(TAGS)
    expect(p.podman(["exec", name, "ip", "-o", "-4", "addr", "show", "tailscale0"])).toContain(`inet ${tailnetIp}/32`)

    // the container reaches the peer, and the peer the container, over a direct WireGuard path
    const peerIp = ((await peer.status()).Self.TailscaleIPs as Array<string>).find((ip) => ip.startsWith("100."))!
    const { stdout: ping } = await execFileAsync("ip", ["netns", "exec", containerNetns, "busybox", "ping", "-c", "2", "-W", "15", peerIp], { timeout: 60_000 })
    expect(ping).toMatch(/[12] packets received/)
    const pong = await peer.cli(["ping", "--c", "20", "--until-direct", tailnetIp!], 90_000)
    expect(pong).toMatch(new RegExp(`pong from ${name} .* via 10\\.236\\.70\\.\\d+:\\d+`))
    await execFileAsync("ip", ["netns", "exec", peerHost.netns, "busybox", "ping", "-c", "1", "-W", "15", tailnetIp!], { timeout: 60_000 })

    // the key: not in the member tailscaled's environment, in no file of the member (command lines: below)
    const daemons = tailscaleds()
    expect(daemons.length).toBe(1)
    const pid = daemons[0]!
    expect(fs.realpathSync(`/proc/${pid}/exe`)).toBe(fs.realpathSync(tailnet!.runtime.tailscaled))
    expect(fs.readlinkSync(`/proc/${pid}/ns/net`)).toBe(fs.readlinkSync(`/proc/${p.podman(["inspect", "-f", "{{.State.Pid}}", name]).trim()}/ns/net`))
    const environ = fs.readFileSync(`/proc/${pid}/environ`, "utf8")
    expect(environ).toContain("TS_NO_LOGS_NO_SUPPORT=true")
    expect(environ).not.toContain(key.key)
    expect(environ).not.toContain("CONTAINERSCALE_")
    const memberRoot = path.join(stateDir, "member")
    const memberDirs = fs.readdirSync(memberRoot)
    expect(memberDirs.length).toBe(1)
    const memberDir = path.join(memberRoot, memberDirs[0]!)
    for (const f of ["tailscaled.log", "attachment.json"]) expect(fs.readFileSync(path.join(memberDir, f), "utf8")).not.toContain(key.key)
    // libcni caches the network's config (base64) with each result: it holds the key's path, not the key
    const cached = libcniCacheFiles(network)
    expect(cached.length).toBe(1)
    const entry = fs.readFileSync(cached[0]!, "utf8")
    const config = Buffer.from(JSON.parse(entry).config, "base64").toString("utf8")
    expect(config).toContain(`"authKey":"file:${keyFile}"`)
    expect(entry + config).not.toContain(key.key)

    p.podman(["rm", "-f", "-t", "0", name])
    await waitUntil("the ephemeral node to leave Headscale", async () => ((await tailnet!.nodes()).some((n) => n.name === name) ? undefined : true), 30_000)
    expect((await tailnet!.nodes()).map((n) => n.name)).toEqual(["peer"])
    await waitUntil("tailscaled to exit", () => (tailscaleds().length === 0 && !processAlive(pid) ? true : undefined), 15_000)
    expect(fs.existsSync(memberDir)).toBe(false)
    expect(listNetns()).not.toContain(containerNetns)
    expect(listLinks(node.netns, "veth")).toEqual([])
    expect(libcniCacheFiles(network)).toEqual([])
    expect(await watcher.stop()).toEqual([])
  })
})

import {
  type CreatedAuthKey,
  type DockerDriver,
  dockerSandbox,
  type DockerSandbox,
  type RealNode,
  type RealTailnet,
  startDockerDriver,
  startMemberTestbed,
  type TailnetHost,
  distBin
} from "@containerscale/sandbox"
import {
  cleanUpAll,
  type CommandLineWatch,
  listLinks,
  netnsPath,
  processAlive,
  processesInNetns,
  processesWith,
  ticksNow,
  uniquePrefix,
  waitUntil,
  watchCommandLines,
  writableFor
} from "@containerscale/testing"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

/**
 * containerscale-docker in member mode against the real daemons: Headscale 0.29 and DERP in the
 * real tailnet fixture's hub, tailscaled 1.102 in the container, a real tailscaled peer on another
 * host. The private dockerd and the driver run in the fixture's "node" host namespace, which the
 * hub routes the containers' subnet to, so the member tailscaled reaches Headscale and the peer
 * reaches the container's address directly.
 */

const execFileAsync = promisify(execFile)
const prefix = uniquePrefix()
const SUBNET = "10.237.60.0/24"
const TAGS = ["tag:docker"]
const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-dmreal-`))
const stateDir = path.join(dir, "state")
const keyFile = path.join(dir, "authkey")
const driverName = `${prefix}drv`
const binary = process.env.CONTAINERSCALE_DOCKER ?? path.join(distBin(), "containerscale-docker")

let tailnet: RealTailnet | undefined
let node: TailnetHost
let peerHost: TailnetHost
let peer: RealNode
let key: CreatedAuthKey
let sandbox: DockerSandbox | undefined
let driver: DockerDriver | undefined

/** The member tailscaleds the driver started (its own command line has `--state-dir`, not `--socket=`). */
const tailscaleds = () => processesWith(`--socket=${stateDir}/`)

let watcher: CommandLineWatch | undefined

beforeAll(async () => {
  if (!fs.existsSync(binary)) throw new Error(`${binary} is missing: flock /tmp/cs-build.lock npm run build`)
  const bed = await startMemberTestbed({ prefix: `${prefix}-`, subnet: SUBNET, user: "docker", tags: TAGS })
  tailnet = bed.tailnet
  node = bed.node
  peerHost = bed.peerHost
  peer = bed.peer
  key = bed.key
  fs.writeFileSync(keyFile, `${key.key}\n`, { mode: 0o600 })
  sandbox = await dockerSandbox({ prefix, netns: netnsPath(node.netns) })
  driver = await startDockerDriver({ name: driverName, socketDir: path.join(dir, "sock"), stateDir, netns: netnsPath(node.netns), binary })
}, 900_000)

afterAll(() =>
  cleanUpAll([
    () => watcher?.stop(),
    // containers and networks first (the driver must still answer), then the daemon, then the driver
    () => sandbox?.dispose(),
    () => driver?.dispose(),
    () => tailscaleds().forEach((pid) => process.kill(pid, "SIGKILL")),
    () => tailnet?.close(),
    () => fs.rmSync(dir, { recursive: true, force: true })
  ]), 180_000)

describe("containerscale-docker member mode on a real tailnet", { timeout: 300_000 }, () => {
  it("a container joins Headscale as its own tagged node, reaches a real peer over WireGuard, keeps the key out of sight, and leaves on rm", async () => {
    const s = sandbox!
    const docker = (args: ReadonlyArray<string>) => s.docker(args)
    const net = `${prefix}-member`
    const name = `${prefix}-ma`
    watcher = watchCommandLines(keyFile)
    await watcher.ready
    docker([
      "network", "create", "-d", driverName, "--ipam-driver", driverName, "--subnet", SUBNET,
      "-o", "containerscale.mode=member",
      "-o", `containerscale.login-server=${tailnet!.loginServer}`,
      "-o", `containerscale.auth-key-file=${keyFile}`,
      "-o", `containerscale.tailscaled-path=${tailnet!.runtime.tailscaled}`,
      "-o", `containerscale.tags=${TAGS.join(",")}`,
      net
    ])
    docker(["run", "-d", "--name", name, "--network", net, s.image, "sleep", "600"])
    const endpointId = docker(["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.EndpointID}}{{end}}", name]).trim()
    const sandboxKey = docker(["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", name]).trim()
    expect(endpointId).toMatch(/^[0-9a-f]{64}$/)
    expect(fs.existsSync(sandboxKey)).toBe(true)
    const hostname = endpointId.slice(0, 12)

    const joined = await waitUntil(
      "the container's node online in Headscale",
      async () => (await tailnet!.nodes()).find((n) => n.name === hostname && n.online === true),
      120_000,
      () => `driver output:\n${driver!.output().slice(-4000)}`
    )
    const tailnetIp = joined.ip_addresses?.find((ip) => ip.startsWith("100."))
    expect(tailnetIp).toMatch(/^100\.\d+\.\d+\.\d+$/)
    expect([...(joined.tags ?? [])].sort()).toEqual(TAGS)
    // Headscale lists the node online a moment before tailscaled has configured tailscale0
    await waitUntil("the node's address on the container's tailscale0", () =>
      docker(["exec", name, "ip", "-o", "-4", "addr", "show", "tailscale0"]).includes(`inet ${tailnetIp}/32`) ? true : undefined, 30_000)

    // the container reaches the peer, and the peer the container, over a direct WireGuard path
    const peerIp = ((await peer.status()).Self.TailscaleIPs as Array<string>).find((ip) => ip.startsWith("100."))!
    const fromContainer = await s.dockerAsync(["exec", name, "ping", "-c", "2", "-W", "15", peerIp], { timeoutMs: 60_000 })
    expect(fromContainer.code, fromContainer.stdout + fromContainer.stderr).toBe(0)
    expect(fromContainer.stdout).toMatch(/[12] packets received/)
    const pong = await peer.cli(["ping", "--c", "20", "--until-direct", tailnetIp!], 90_000)
    expect(pong).toMatch(new RegExp(`pong from ${hostname} .* via 10\\.237\\.60\\.\\d+:\\d+`))
    await execFileAsync("ip", ["netns", "exec", peerHost.netns, "busybox", "ping", "-c", "1", "-W", "15", tailnetIp!], { timeout: 60_000 })

    // the key: not in the member tailscaled's environment, in no output or store (command lines: below)
    const pids = tailscaleds()
    expect(pids.length).toBe(1)
    const pid = pids[0]!
    expect(fs.realpathSync(`/proc/${pid}/exe`)).toBe(fs.realpathSync(tailnet!.runtime.tailscaled))
    const netnsOfMember = fs.readlinkSync(`/proc/${pid}/ns/net`)
    expect(netnsOfMember).not.toBe(fs.readlinkSync("/proc/self/ns/net"))
    expect(fs.readFileSync("/proc/self/mountinfo", "utf8")).toContain(` ${sandboxKey} `)
    const environ = fs.readFileSync(`/proc/${pid}/environ`, "utf8")
    expect(environ).toContain("TS_NO_LOGS_NO_SUPPORT=true")
    expect(environ).not.toContain(key.key)
    expect(environ).not.toContain("CONTAINERSCALE_")
    expect(driver!.output()).not.toContain(key.key)
    expect(docker(["network", "inspect", net])).not.toContain(key.key)
    const memberDirs = fs.readdirSync(path.join(stateDir, "member"))
    expect(memberDirs.length).toBe(1)
    const memberDir = path.join(stateDir, "member", memberDirs[0]!)
    expect(fs.readFileSync(path.join(memberDir, "tailscaled.log"), "utf8")).not.toContain(key.key)
    expect(fs.readFileSync(path.join(memberDir, "attachment.json"), "utf8")).not.toContain(key.key)
    // the member's tailscaled writes only its own folder
    expect(writableFor(pid, ["/", "/var/lib", dir, stateDir, path.join(stateDir, "member"), memberDir])).toEqual([memberDir])

    const removing = ticksNow()
    docker(["rm", "-f", name])
    await waitUntil("the ephemeral node to leave Headscale", async () => ((await tailnet!.nodes()).some((n) => n.name === hostname) ? undefined : true), 30_000)
    expect((await tailnet!.nodes()).map((n) => n.name)).toEqual(["peer"])
    await waitUntil("tailscaled to exit", () => (tailscaleds().length === 0 && !processAlive(pid) ? true : undefined), 15_000)
    expect(fs.existsSync(memberDir)).toBe(false)
    // the container's namespace is gone: no process is in it and dockerd no longer holds it mounted
    expect(processesInNetns(netnsOfMember, removing)).toEqual([])
    expect(fs.readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(` ${sandboxKey} `)
    expect(listLinks(node.netns, "cs")).toEqual([])
    docker(["network", "rm", net])
    expect(fs.readdirSync(path.join(stateDir, "docker", "endpoints")).filter((f) => f.endsWith(".json"))).toEqual([])
    expect(fs.readdirSync(path.join(stateDir, "docker", "networks")).filter((f) => f.endsWith(".json"))).toEqual([])
    expect(await watcher.stop()).toEqual([])
  })

  it("refuses Tailscale SSH when the network is created, before any container joins", () => {
    const net = `${prefix}-ssh`
    expect(() =>
      sandbox!.docker([
        "network", "create", "-d", driverName, "--ipam-driver", driverName, "--subnet", SUBNET,
        "-o", "containerscale.mode=member", "-o", `containerscale.auth-key-file=${keyFile}`, "-o", "containerscale.ssh=true", net
      ])
    ).toThrow(/containerscale\.ssh: Tailscale SSH is refused in member mode.*run an SSH server in the container/)
    expect(sandbox!.docker(["network", "ls", "-q", "--filter", `name=${net}`]).trim()).toBe("")
    expect(tailscaleds()).toEqual([])
  })
})

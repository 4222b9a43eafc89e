import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { netnsPath, netnsScope, type NetnsScope, runCommand, socketAnswers, uniquePrefix, waitUntil } from "@containerscale/testing"
import { answering, type Daemon, readLog, startDaemon, stopDaemon } from "./daemon.ts"
import { type TailnetRuntime, tailnetRuntime } from "./runtime.ts"

/**
 * A real tailnet on this machine, with nothing leaving it: Headscale (sqlite, plain HTTP) and a
 * DERP server (`derper`, TLS with a self-signed certificate for its IP, trusted through the DERP
 * map) in a hub network namespace with a bridge; every host (a node, or a peer standing for
 * another machine) is a namespace of its own on that bridge, so WireGuard paths between them are
 * direct. Users, pre-auth keys and API keys are made with the `headscale` CLI over its unix
 * socket, as an operator would; the Headscale API is also relayed to a loopback port of the
 * caller's namespace (`apiUrl`).
 */

const execFileAsync = promisify(execFile)

export type RealHeadscale = "current" | "0.25"

export interface RealTailnetOptions {
  /** which Headscale to run (default the current one) */
  readonly headscale?: RealHeadscale
  /** prefix of every namespace and link made (default a unique `cst` prefix) */
  readonly prefix?: string
  /** MagicDNS base domain (default `tailnet.test`) */
  readonly baseDomain?: string
  /** where progress lines go while the daemons are built (default: stderr) */
  readonly progress?: (line: string) => void
  /** Headscale's policy (HuJSON as an object); default none, which lets every node reach every other and allows no SSH */
  readonly policy?: object
}

export interface HeadscaleUserJson {
  readonly id: string
  readonly name: string
}

/** A node as `headscale nodes list -o json` prints it (0.29 and 0.25 shapes, the fields tests use). */
export interface HeadscaleNodeJson {
  readonly id: string
  readonly name: string
  readonly given_name?: string
  readonly ip_addresses?: ReadonlyArray<string>
  readonly online?: boolean
  readonly tags?: ReadonlyArray<string>
  readonly forced_tags?: ReadonlyArray<string>
  readonly valid_tags?: ReadonlyArray<string>
  readonly approved_routes?: ReadonlyArray<string>
  readonly available_routes?: ReadonlyArray<string>
  readonly subnet_routes?: ReadonlyArray<string>
  readonly user?: { readonly id?: string; readonly name?: string }
  readonly expiry?: unknown
  readonly [key: string]: unknown
}

export interface RealAuthKeyOptions {
  readonly user: HeadscaleUserJson
  readonly reusable?: boolean
  readonly ephemeral?: boolean
  readonly tags?: ReadonlyArray<string>
  /** Go duration (default 1h); a negative one is not accepted by the CLI: expire it instead */
  readonly expiration?: string
}

export interface CreatedAuthKey {
  readonly key: string
  readonly id: string
}

export interface TailnetHost {
  readonly name: string
  /** the namespace name (under /run/netns) */
  readonly netns: string
  /** its address on the hub bridge */
  readonly address: string
}

export interface HostOptions {
  /** subnets behind this host: the hub routes them to it, and it forwards */
  readonly routedSubnets?: ReadonlyArray<string>
}

export interface NodeOptions {
  readonly host: TailnetHost
  readonly authKey: string
  readonly hostname?: string
  readonly advertiseRoutes?: ReadonlyArray<string>
  readonly acceptRoutes?: boolean
  /** more `tailscale up` flags */
  readonly upArgs?: ReadonlyArray<string>
  /** userspace networking instead of a TUN device */
  readonly userspace?: boolean
  /** tailscaled manages netfilter rules in the host (a real node's default); default off */
  readonly netfilter?: boolean
}

export interface RealNode {
  readonly name: string
  readonly host: TailnetHost
  readonly dir: string
  readonly socket: string
  readonly pid: number
  /** runs the `tailscale` CLI against this node */
  readonly cli: (args: ReadonlyArray<string>, timeoutMs?: number) => Promise<string>
  /** `tailscale status --json` */
  readonly status: () => Promise<any>
  /** stops tailscaled (SIGTERM, SIGKILL after 10 s) */
  readonly stop: () => Promise<void>
  /** starts tailscaled again on the same state; resolves once its socket answers */
  readonly restart: () => Promise<RealNode>
  readonly log: () => string
}

export interface RealTailnet {
  readonly runtime: TailnetRuntime
  readonly generation: RealHeadscale
  readonly prefix: string
  readonly dir: string
  readonly hub: string
  readonly hubAddress: string
  /** Headscale's URL for tailscaled (`--login-server`), reachable from every host */
  readonly loginServer: string
  /** the same API on a loopback port of the caller's namespace */
  readonly apiUrl: string
  readonly baseDomain: string
  readonly scope: NetnsScope
  /** the environment every tailscaled of the fixture runs with: no host paths, no log uploads, no D-Bus */
  readonly tailscaledEnv: (dir: string) => NodeJS.ProcessEnv
  /** runs the `headscale` CLI (`--config`, `-o json` added when `json`) */
  readonly headscale: (args: ReadonlyArray<string>, json?: boolean) => Promise<any>
  readonly createUser: (name: string) => Promise<HeadscaleUserJson>
  readonly createAuthKey: (options: RealAuthKeyOptions) => Promise<CreatedAuthKey>
  readonly expireAuthKey: (key: CreatedAuthKey, user: HeadscaleUserJson) => Promise<void>
  readonly createApiKey: () => Promise<string>
  readonly nodes: () => Promise<Array<HeadscaleNodeJson>>
  readonly addHost: (name: string, options?: HostOptions) => TailnetHost
  readonly startNode: (name: string, options: NodeOptions) => Promise<RealNode>
  /** stops every daemon, removes every namespace and the work folder */
  readonly close: () => Promise<void>
  readonly headscaleLog: () => string
}

const HUB_BRIDGE = "br0"
const SUBNET = "10.98.0"
const HEADSCALE_PORT = 8080
const DERP_PORT = 8443
const STUN_PORT = 3478
const MINIMAL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

const headscaleConfig = (generation: RealHeadscale, dir: string, hub: string, baseDomain: string, policyPath: string) => {
  const ephemeral = generation === "0.25"
    ? "ephemeral_node_inactivity_timeout: 30m\n"
    : "node:\n  ephemeral:\n    inactivity_timeout: 30m\n"
  return `server_url: http://${hub}:${HEADSCALE_PORT}
listen_addr: ${hub}:${HEADSCALE_PORT}
metrics_listen_addr: 127.0.0.1:9090
grpc_listen_addr: 127.0.0.1:50443
noise:
  private_key_path: ${dir}/noise_private.key
prefixes:
  v4: 100.64.0.0/10
  v6: fd7a:115c:a1e0::/48
  allocation: sequential
derp:
  server:
    enabled: false
  urls: []
  paths:
    - ${dir}/derp.yaml
  auto_update_enabled: false
disable_check_updates: true
${ephemeral}database:
  type: sqlite
  sqlite:
    path: ${dir}/db.sqlite
    write_ahead_log: true
log:
  level: info
  format: text
policy:
  mode: file
  path: "${policyPath}"
dns:
  magic_dns: true
  base_domain: ${baseDomain}
  override_local_dns: false
  nameservers:
    global: []
unix_socket: ${dir}/headscale.sock
unix_socket_permission: "0700"
logtail:
  enabled: false
`
}

const derpMap = (hub: string) => `regions:
  900:
    regionid: 900
    regioncode: local
    regionname: containerscale test DERP
    nodes:
      - name: 900a
        regionid: 900
        hostname: ${hub}
        ipv4: ${hub}
        ipv6: none
        derpport: ${DERP_PORT}
        stunport: ${STUN_PORT}
        insecurefortests: true
`

/** Relays a unix socket to a TCP address; run with node inside the hub namespace. */
const RELAY_SCRIPT = `
const net = require("node:net")
const fs = require("node:fs")
const [sock, host, port] = process.argv.slice(1)
fs.rmSync(sock, { force: true })
net.createServer((c) => {
  const up = net.connect(Number(port), host)
  c.pipe(up).pipe(c)
  c.on("error", () => up.destroy())
  up.on("error", () => c.destroy())
}).listen(sock)
process.on("SIGTERM", () => process.exit(0))
`

/** Starts a real tailnet: builds or finds the daemons, then the hub with Headscale and DERP. */
export const startRealTailnet = async (options: RealTailnetOptions = {}): Promise<RealTailnet> => {
  const runtime = await tailnetRuntime(options.progress === undefined ? {} : { progress: options.progress })
  const generation = options.headscale ?? "current"
  const prefix = options.prefix ?? `${uniquePrefix()}-`
  const baseDomain = options.baseDomain ?? "tailnet.test"
  const scope = netnsScope(prefix)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-tailnet-"))
  fs.chmodSync(dir, 0o700)
  const daemons: Array<Daemon> = []
  /** every tailscaled started, stopped or not: stopping one that is gone does nothing */
  const nodeDaemons: Array<Daemon> = []
  let hostCount = 0
  let apiServer: net.Server | undefined
  const hubAddress = `${SUBNET}.1`
  const loginServer = `http://${hubAddress}:${HEADSCALE_PORT}`
  const hub = scope.create("hub")
  const headscaleBin = generation === "0.25" ? runtime.headscale025 : runtime.headscale
  const hsDir = path.join(dir, "headscale")
  const hsConfig = path.join(hsDir, "config.yaml")
  const hsLog = path.join(hsDir, "headscale.log")

  const close = async () => {
    await Promise.all(nodeDaemons.map((d) => stopDaemon(d)))
    apiServer?.close()
    await Promise.all(daemons.map((d) => stopDaemon(d)))
    scope.dispose()
    fs.rmSync(dir, { recursive: true, force: true })
  }

  try {
    const inHub = (args: ReadonlyArray<string>) => runCommand("ip", ["-n", hub, ...args])
    inHub(["link", "add", HUB_BRIDGE, "type", "bridge"])
    inHub(["addr", "add", `${hubAddress}/24`, "dev", HUB_BRIDGE])
    inHub(["link", "set", HUB_BRIDGE, "up"])
    runCommand("ip", ["netns", "exec", hub, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    const hubEnv = { PATH: MINIMAL_PATH, HOME: dir }
    const inHubCommand = (argv: ReadonlyArray<string>) => ["nsenter", `--net=${netnsPath(hub)}`, "--", ...argv]

    const derpDir = path.join(dir, "derper")
    fs.mkdirSync(path.join(derpDir, "certs"), { recursive: true })
    daemons.push(startDaemon(inHubCommand([
      runtime.derper, `-a`, `${hubAddress}:${DERP_PORT}`, `--hostname=${hubAddress}`, "--certmode=manual",
      `--certdir=${path.join(derpDir, "certs")}`, `-c`, path.join(derpDir, "derper.json"), "--http-port=-1",
      `--stun-port=${STUN_PORT}`, "--home=blank"
    ]), path.join(derpDir, "derper.log"), hubEnv))

    fs.mkdirSync(hsDir, { recursive: true, mode: 0o700 })
    fs.writeFileSync(path.join(hsDir, "derp.yaml"), derpMap(hubAddress))
    const policyPath = options.policy === undefined ? "" : path.join(hsDir, "policy.json")
    if (options.policy !== undefined) fs.writeFileSync(policyPath, JSON.stringify(options.policy))
    fs.writeFileSync(hsConfig, headscaleConfig(generation, hsDir, hubAddress, baseDomain, policyPath))
    const hs = startDaemon(inHubCommand([headscaleBin, "serve", "--config", hsConfig]), hsLog, hubEnv)
    daemons.push(hs)
    const hsSocket = path.join(hsDir, "headscale.sock")
    await waitUntil("Headscale's unix socket", async () => (await socketAnswers(hsSocket)) || undefined, 30_000, () => readLog(hsLog), 50)

    const relaySocket = path.join(dir, "api.sock")
    daemons.push(startDaemon(inHubCommand([process.execPath, "-e", RELAY_SCRIPT, relaySocket, hubAddress, String(HEADSCALE_PORT)]), path.join(dir, "relay.log"), hubEnv))
    await waitUntil("the API relay", async () => (await socketAnswers(relaySocket)) || undefined, 10_000, () => readLog(path.join(dir, "relay.log")), 50)
    apiServer = net.createServer((c) => {
      const up = net.connect(relaySocket)
      c.pipe(up).pipe(c)
      c.on("error", () => up.destroy())
      up.on("error", () => c.destroy())
    })
    const port = await new Promise<number>((resolve) => apiServer!.listen(0, "127.0.0.1", () => resolve((apiServer!.address() as net.AddressInfo).port)))
    const derpLog = path.join(derpDir, "derper.log")
    await waitUntil("derper listening", () => readLog(derpLog).includes("derper: serving") || undefined, 15_000, () => readLog(derpLog), 50)

    const headscale = async (args: ReadonlyArray<string>, json = false): Promise<any> => {
      const { stdout } = await execFileAsync(headscaleBin, [...args, "--config", hsConfig, ...(json ? ["-o", "json"] : [])], {
        env: hubEnv,
        timeout: 30_000
      }).catch((e: { stderr?: string; stdout?: string; message: string }) => {
        throw new Error(`headscale ${args.join(" ")}: ${(e.stderr ?? "").trim() || (e.stdout ?? "").trim() || e.message}`)
      })
      return json ? JSON.parse(stdout) : stdout
    }

    const tailscaledEnv = (nodeDir: string): NodeJS.ProcessEnv => ({
      PATH: MINIMAL_PATH,
      HOME: nodeDir,
      TS_LOGS_DIR: path.join(nodeDir, "logs"),
      TS_NO_LOGS_NO_SUPPORT: "true",
      DBUS_SYSTEM_BUS_ADDRESS: "unix:path=/nonexistent"
    })

    const addHost = (name: string, hostOptions: HostOptions = {}): TailnetHost => {
      const n = ++hostCount + 1
      const netns = scope.create(name)
      const address = `${SUBNET}.${n}`
      inHub(["link", "add", `h${n}`, "type", "veth", "peer", "name", "eth0", "netns", netns])
      inHub(["link", "set", `h${n}`, "master", HUB_BRIDGE, "up"])
      runCommand("ip", ["-n", netns, "addr", "add", `${address}/24`, "dev", "eth0"])
      runCommand("ip", ["-n", netns, "link", "set", "eth0", "up"])
      runCommand("ip", ["-n", netns, "route", "add", "default", "via", hubAddress])
      for (const subnet of hostOptions.routedSubnets ?? []) inHub(["route", "add", subnet, "via", address])
      if ((hostOptions.routedSubnets ?? []).length > 0) {
        runCommand("ip", ["netns", "exec", netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
      }
      return { name, netns, address }
    }

    const startNode = async (name: string, nodeOptions: NodeOptions): Promise<RealNode> => {
      const nodeDir = path.join(dir, "nodes", name)
      fs.mkdirSync(path.join(nodeDir, "logs"), { recursive: true, mode: 0o700 })
      const socket = path.join(nodeDir, "tailscaled.sock")
      const logFile = path.join(nodeDir, "tailscaled.log")
      const cli = async (args: ReadonlyArray<string>, timeoutMs = 30_000) => {
        const { stdout } = await execFileAsync(runtime.tailscale, [`--socket=${socket}`, ...args], { env: { PATH: MINIMAL_PATH }, timeout: timeoutMs })
          .catch((e: { stderr?: string; stdout?: string; message: string }) => {
            throw new Error(`tailscale ${args.join(" ")} on ${name}: ${(e.stderr ?? "").trim() || (e.stdout ?? "").trim() || e.message}\n${readLog(logFile).split("\n").slice(-20).join("\n")}`)
          })
        return stdout
      }
      const launch = async (): Promise<RealNode> => {
        const daemon = startDaemon(["nsenter", `--net=${netnsPath(nodeOptions.host.netns)}`, "--", runtime.tailscaled,
          `--statedir=${nodeDir}`, `--socket=${socket}`, `--tun=${nodeOptions.userspace === true ? "userspace-networking" : "tailscale0"}`,
          "--no-logs-no-support"], logFile, tailscaledEnv(nodeDir))
        nodeDaemons.push(daemon)
        await waitUntil(`tailscaled of ${name} answering`, () => answering(daemon, socket), 30_000, () => readLog(logFile), 50)
        const stop = () => stopDaemon(daemon)
        return {
          name,
          host: nodeOptions.host,
          dir: nodeDir,
          socket,
          pid: daemon.child.pid!,
          cli,
          status: async () => JSON.parse(await cli(["status", "--json"])),
          stop,
          restart: async () => {
            await stop()
            return launch()
          },
          log: () => readLog(logFile)
        }
      }
      const node = await launch()
      const keyFile = path.join(nodeDir, "authkey")
      fs.writeFileSync(keyFile, nodeOptions.authKey, { mode: 0o600 })
      try {
        await cli([
          "up", `--login-server=${loginServer}`, `--auth-key=file:${keyFile}`,
          `--hostname=${nodeOptions.hostname ?? name}`, "--accept-dns=false", `--netfilter-mode=${nodeOptions.netfilter === true ? "on" : "off"}`,
          `--accept-routes=${nodeOptions.acceptRoutes === true}`,
          ...(nodeOptions.advertiseRoutes === undefined ? [] : [`--advertise-routes=${nodeOptions.advertiseRoutes.join(",")}`]),
          ...(nodeOptions.upArgs ?? []), "--timeout=60s"
        ], 70_000)
      } finally {
        fs.rmSync(keyFile, { force: true })
      }
      return node
    }

    const createUser = async (name: string): Promise<HeadscaleUserJson> => {
      await headscale(["users", "create", name])
      const users = (await headscale(["users", "list"], true)) as Array<{ id: string | number; name: string }>
      const user = users.find((u) => u.name === name)
      if (user === undefined) throw new Error(`headscale users list does not show ${name}: ${JSON.stringify(users)}`)
      return { id: String(user.id), name: user.name }
    }

    const createAuthKey = async (o: RealAuthKeyOptions): Promise<CreatedAuthKey> => {
      const answer = await headscale([
        "preauthkeys", "create", "--user", generation === "0.25" ? o.user.name : o.user.id,
        "--expiration", o.expiration ?? "1h",
        ...(o.reusable === true ? ["--reusable"] : []),
        ...(o.ephemeral === true ? ["--ephemeral"] : []),
        ...(o.tags !== undefined && o.tags.length > 0 ? ["--tags", o.tags.join(",")] : [])
      ], true)
      return { key: String(answer.key), id: String(answer.id) }
    }

    const expireAuthKey = async (key: CreatedAuthKey, user: HeadscaleUserJson) => {
      if (generation === "0.25") await headscale(["preauthkeys", "expire", "--user", user.name, key.key])
      else await headscale(["preauthkeys", "expire", "--id", key.id])
    }

    const createApiKey = async () => String(await headscale(["apikeys", "create", "--expiration", "24h"])).trim().split("\n").at(-1)!.trim()

    const nodesList = async () => ((await headscale(["nodes", "list"], true)) ?? []) as Array<HeadscaleNodeJson>

    return {
      runtime,
      generation,
      prefix,
      dir,
      hub,
      hubAddress,
      loginServer,
      apiUrl: `http://127.0.0.1:${port}`,
      baseDomain,
      scope,
      tailscaledEnv,
      headscale,
      createUser,
      createAuthKey,
      expireAuthKey,
      createApiKey,
      nodes: nodesList,
      addHost,
      startNode,
      close,
      headscaleLog: () => readLog(hsLog)
    }
  } catch (e) {
    await close()
    throw e
  }
}

export interface MemberTestbed {
  readonly tailnet: RealTailnet
  /** the node the runtime runs on, with the containers' subnet routed to it */
  readonly node: TailnetHost
  readonly peerHost: TailnetHost
  /** a real tailscaled on another host, logged in as `peer` */
  readonly peer: RealNode
  /** reusable and ephemeral, with the given tags, for the containers */
  readonly key: CreatedAuthKey
}

/**
 * What a member-mode test of a runtime needs on the real tailnet: a node host with the
 * containers' `subnet` routed to it, a peer node on another host, and a key for the containers.
 */
export const startMemberTestbed = async (options: {
  readonly prefix: string
  readonly subnet: string
  readonly user: string
  readonly tags: ReadonlyArray<string>
}): Promise<MemberTestbed> => {
  const tailnet = await startRealTailnet({ prefix: options.prefix })
  try {
    const node = tailnet.addHost("node", { routedSubnets: [options.subnet] })
    const peerHost = tailnet.addHost("peer")
    const user = await tailnet.createUser(options.user)
    const key = await tailnet.createAuthKey({ user, reusable: true, ephemeral: true, tags: options.tags })
    const peer = await tailnet.startNode("peer", { host: peerHost, authKey: (await tailnet.createAuthKey({ user, ephemeral: true })).key })
    return { tailnet, node, peerHost, peer, key }
  } catch (e) {
    await tailnet.close()
    throw e
  }
}

import { memberRoot } from "@containerscale/core"
import { makeLocalApi, memberPaths } from "@containerscale/core/member"
import {
  type Conflist,
  netnsPath,
  netnsScope,
  removeLeftovers,
  runCommand,
  runConflist,
  uniquePrefix
} from "@containerscale/testing"
import { cniPath } from "@containerscale/sandbox"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { chooseTailnet, type DemoNode, type DemoTailnet, type DemoTailnetKind, realTailnet, standInTailnet } from "./tailnets.ts"

const execFileAsync = promisify(execFile)

export interface DemoMember {
  readonly id: string
  readonly name: string
  readonly netns: string
  /** the tailnet addresses in the ADD result */
  readonly tailnet: ReadonlyArray<string>
}

export interface TailnetDemoReport {
  readonly tailnet: DemoTailnetKind
  readonly prefix: string
  readonly members: ReadonlyArray<DemoMember>
  readonly nodesWhileUp: ReadonlyArray<DemoNode>
  /** what the first container's tailscaled lists as peers (LocalAPI status) */
  readonly peersSeen: ReadonlyArray<string>
  readonly pinged: boolean
  readonly nodesAtEnd: ReadonlyArray<DemoNode>
}

export interface TailnetDemoOptions {
  readonly log?: (line: string) => void
  /** "real" (tailscaled and Headscale built from their Go modules) or "stand-in"; default real when Go is there */
  readonly tailnet?: DemoTailnetKind
  /** runs while both containers are on the tailnet */
  readonly whileUp?: (members: ReadonlyArray<DemoMember>) => void | Promise<void>
}

const SUBNET = "10.232.0.0/24"
const TAGS = ["tag:demo"]

/**
 * Two "containers" (network namespaces) on a chain of the real plugins: `containerscale` in
 * router mode gives each a veth and an address from the pool, then `containerscale` in member
 * mode makes each its own tailnet node (a tailscaled inside its namespace). By default the tailnet
 * is real: Headscale and tailscaled built from their Go modules; `tailnet: "stand-in"` uses the
 * built-in stand-ins instead. The first container pings the second over the tailnet. Everything
 * runs in throwaway namespaces and is removed at the end, also when a step fails.
 */
export const runTailnetDemo = async (options: TailnetDemoOptions = {}): Promise<TailnetDemoReport> => {
  const log = options.log ?? (() => {})
  const prefix = `${uniquePrefix("cstn")}-`
  const scope = netnsScope(prefix)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  let tailnet: DemoTailnet | undefined
  try {
    tailnet = chooseTailnet(options.tailnet, log) === "real"
      ? await realTailnet(SUBNET, TAGS, log)
      : await standInTailnet(dir, scope, TAGS)
    const { authKey, node } = tailnet
    log(`tailnet: ${tailnet.description}`)
    const stateDir = path.join(dir, "state")
    const list: Conflist = {
      cniVersion: "1.0.0",
      name: `${prefix}net`,
      plugins: [
        {
          type: "containerscale",
          mode: "router",
          ipam: { type: "containerscale-ipam", dataDir: path.join(dir, "ipam"), ranges: [[{ subnet: SUBNET }]] }
        },
        {
          type: "containerscale",
          mode: "member",
          loginServer: tailnet.loginServer,
          tailscaledPath: tailnet.tailscaled,
          stateDir,
          tags: TAGS
        }
      ]
    }
    const cni = (command: "ADD" | "DEL", m: { id: string; name: string; netns: string }) =>
      runConflist(list, command, {
        containerId: m.id,
        netns: netnsPath(m.netns),
        ifname: "eth0",
        path: cniPath(),
        runIn: node,
        args: { IgnoreUnknown: "1", K8S_POD_NAME: m.name },
        // the key reaches the plugin through its environment, never through a command line
        env: { CONTAINERSCALE_AUTH_KEY: authKey }
      })
    log(`network ${list.name}: containerscale (router, ${SUBNET}) then containerscale (member), node namespace ${node}`)

    const members: Array<DemoMember> = []
    try {
      for (const name of ["web", "db"]) {
        const m = { id: `${prefix}${name}`, name, netns: scope.create(name) }
        const started = Date.now()
        const added = await cni("ADD", m)
        if (!added.ok) throw new Error(`ADD ${m.id} failed: ${JSON.stringify(added.error)}`)
        const ips = (added.result as { ips: Array<{ address: string }> }).ips.map((ip) => ip.address)
        const tailnet = ips.filter((a) => a.startsWith("100.") || a.startsWith("fd7a:"))
        log(`ADD ${name}: ${ips.join(", ")} (${Date.now() - started} ms)`)
        log(`  ip -n ${m.netns} -br addr show tailscale0: ${runCommand("ip", ["-n", m.netns, "-br", "addr", "show", "tailscale0"]).trim()}`)
        members.push({ ...m, tailnet })
      }
      const nodesWhileUp = await tailnet.nodes()
      log("tailnet nodes (the control server's view):")
      for (const n of nodesWhileUp) log(`  ${n.id}  ${n.name.padEnd(10)} ${n.addresses.join(", ")}  ${n.online ? "online" : "offline"}  ${n.tags.join(",")}`)
      const [web, db] = members as [DemoMember, DemoMember]
      const status = await Effect.runPromise(
        makeLocalApi({ socket: memberPaths(memberRoot(stateDir), `${list.name}_${web.name}`).socket }).status({ peers: true })
      )
      const peersSeen = Object.values(status.Peer ?? {}).map((p) => `${p.DNSName.replace(/\.$/, "")} ${(p.TailscaleIPs ?? []).join(", ")}`)
      log(`web's tailscaled sees its peers: ${peersSeen.join("; ")}`)
      const target = db.tailnet[0]!.split("/")[0]!
      // async: the stand-in relay runs in this process, so a synchronous exec would stall its packets.
      // The first packet to a node that has just joined waits for WireGuard's handshake retry (5 s)
      // while the control server spreads the new node's endpoints: wait up to 15 s for it.
      const { stdout: ping } = await execFileAsync("ip", ["netns", "exec", web.netns, "busybox", "ping", "-c", "2", "-W", "15", target])
      const pinged = / 0% packet loss/.test(ping)
      log(`web pings db over the tailnet (${target}): ${ping.trim().split("\n").at(-2)}`)
      await options.whileUp?.(members)
      for (const m of members.splice(0)) {
        const removed = await cni("DEL", m)
        if (!removed.ok) throw new Error(`DEL ${m.id} failed: ${JSON.stringify(removed.error)}`)
        log(`DEL ${m.name}: logged out, tailscaled stopped`)
      }
      const nodesAtEnd = await tailnet.nodes()
      log(`tailnet nodes now: ${nodesAtEnd.length === 0 ? "none (ephemeral nodes are deleted at logout)" : nodesAtEnd.map((n) => n.name).join(", ")}`)
      return { tailnet: tailnet.kind, prefix, members: [web, db], nodesWhileUp, peersSeen, pinged, nodesAtEnd }
    } finally {
      for (const m of members) await cni("DEL", m).catch(() => undefined)
    }
  } finally {
    try {
      await tailnet?.close()
      scope.dispose()
      removeLeftovers(prefix)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
    log(`removed namespaces ${prefix}* and ${dir}`)
  }
}

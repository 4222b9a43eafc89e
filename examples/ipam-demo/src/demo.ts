import { Ipam, type PoolConfig, type RangeSetUsage, resolvePool } from "@containerscale/core"
import {
  type Conflist,
  interfaceAddresses,
  netnsPath,
  netnsScope,
  removeLeftovers,
  runCommand,
  runConflist,
  uniquePrefix
} from "@containerscale/testing"
import { cniPath } from "@containerscale/sandbox"
import { Effect, Result } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

export interface DemoContainer {
  readonly id: string
  readonly netns: string
  /** the address in the ADD result */
  readonly address: string
  /** eth0's IPv4 addresses as `ip -json addr` showed them inside the container's namespace */
  readonly seen: ReadonlyArray<string>
}

export interface DemoReport {
  readonly prefix: string
  readonly network: string
  readonly containers: ReadonlyArray<DemoContainer>
  readonly poolAfterAdd: RangeSetUsage
  readonly poolAfterFirstDel: RangeSetUsage
  readonly poolAtEnd: RangeSetUsage
}

export interface DemoOptions {
  readonly log?: (line: string) => void
  readonly subnet?: string
  /** runs while the three containers exist, e.g. to look into their namespaces */
  readonly afterAdd?: (containers: ReadonlyArray<DemoContainer>) => void | Promise<void>
}

const formatUsage = (u: RangeSetUsage): Array<string> => [
  `pool ${u.ranges.join(", ")}: size ${u.size}, used ${u.used}`,
  ...u.allocations.map((a) => `  ${a.ip} -> ${a.containerId} (${a.ifname})`)
]

/**
 * Three "containers" (network namespaces) on the reference bridge plugin, which asks
 * containerscale-ipam for their addresses. The bridge lives in a throwaway "host" namespace, so
 * nothing touches the real host; every namespace and file the demo makes is removed at the end,
 * also when a step fails.
 */
export const runDemo = async (options: DemoOptions = {}): Promise<DemoReport> => {
  const log = options.log ?? (() => {})
  const prefix = `${uniquePrefix("csdemo")}-`
  const network = `${prefix}net`
  const pool: PoolConfig = { ranges: [[{ subnet: options.subnet ?? "10.231.0.0/24" }]], strategy: "sequential" }
  const scope = netnsScope(prefix)
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  const ipam = Ipam.make({ dataDir })
  const resolved = Result.getOrThrow(resolvePool(pool))
  const usage = () => Effect.runPromise(ipam.usage({ network, pool: resolved })).then((sets) => sets[0]!)
  const showPool = async () => {
    const u = await usage()
    for (const line of formatUsage(u)) log(line)
    return u
  }

  try {
    const host = scope.create("host")
    const list: Conflist = {
      cniVersion: "1.0.0",
      name: network,
      plugins: [{
        type: "bridge",
        bridge: `${prefix.slice(0, -1)}br`,
        isGateway: true,
        ipMasq: false,
        ipam: { type: "containerscale-ipam", dataDir, ...pool, routes: [{ dst: "0.0.0.0/0" }] }
      }]
    }
    const cni = (command: "ADD" | "DEL", c: { id: string; netns: string }) =>
      runConflist(list, command, { containerId: c.id, netns: netnsPath(c.netns), ifname: "eth0", path: cniPath(), runIn: host })
    const expectOk = (what: string, outcome: Awaited<ReturnType<typeof cni>>) => {
      if (!outcome.ok) throw new Error(`${what} failed: ${JSON.stringify(outcome.error)}`)
      return outcome
    }

    log(`network ${network}: bridge in namespace ${host}, containerscale-ipam with data in ${dataDir}`)
    const containers: Array<DemoContainer> = []
    for (const n of [1, 2, 3]) {
      const c = { id: `${prefix}ctr${n}`, netns: scope.create(`c${n}`) }
      const added = expectOk(`ADD ${c.id}`, await cni("ADD", c))
      const address = (added.result as { ips: Array<{ address: string }> }).ips[0]!.address
      log(`ADD ${c.id}: ${address}`)
      log(`  ip -n ${c.netns} -br addr: ${runCommand("ip", ["-n", c.netns, "-br", "addr", "show", "eth0"]).trim()}`)
      containers.push({ ...c, address, seen: interfaceAddresses(c.netns, "eth0", "inet") })
    }
    await options.afterAdd?.(containers)
    const poolAfterAdd = await showPool()

    const middle = containers[1]!
    expectOk(`DEL ${middle.id}`, await cni("DEL", middle))
    log(`DEL ${middle.id}`)
    const poolAfterFirstDel = await showPool()

    for (const c of containers.filter((c) => c !== middle)) {
      expectOk(`DEL ${c.id}`, await cni("DEL", c))
      log(`DEL ${c.id}`)
    }
    const poolAtEnd = await showPool()
    return { prefix, network, containers, poolAfterAdd, poolAfterFirstDel, poolAtEnd }
  } finally {
    try {
      scope.dispose()
      removeLeftovers(prefix)
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true })
    }
    log(`removed namespaces ${prefix}* and ${dataDir}`)
  }
}

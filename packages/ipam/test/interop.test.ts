import { Ipam, type PoolConfig, resolvePool } from "@containerscale/core"
import {
  type Conflist,
  deleteNetns,
  interfaceAddresses,
  listLinks,
  netnsPath,
  netnsScope,
  removeLeftovers,
  runConflist,
  uniquePrefix
} from "@containerscale/testing"
import { cniPath } from "@containerscale/sandbox"
import { Effect, Result } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

// The reference plugins (Debian's 1.1.1) with containerscale-ipam as their IPAM, on real
// namespaces. Each "host" is a namespace of its own, so bridges and host veths never touch the
// real host.

interface CniResult {
  readonly cniVersion: string
  readonly ips: ReadonlyArray<{ readonly address: string; readonly gateway?: string; readonly interface?: number }>
  readonly interfaces?: ReadonlyArray<{ readonly name: string; readonly sandbox?: string }>
}

interface Case {
  readonly plugin: "bridge" | "ptp"
  readonly subnet: string
  readonly extra: (prefix: string) => Record<string, unknown>
}

const cases: ReadonlyArray<Case> = [
  { plugin: "bridge", subnet: "10.232.0", extra: (p) => ({ bridge: `${p}br`, isGateway: true, ipMasq: false }) },
  { plugin: "ptp", subnet: "10.233.0", extra: () => ({ ipMasq: false }) }
]

describe.each(cases)("$plugin + containerscale-ipam", ({ extra, plugin, subnet }) => {
  const prefix = uniquePrefix()
  const scope = netnsScope(`${prefix}-`)
  let dataDir = ""
  let host = ""

  const conflist = (name: string, pool: PoolConfig): Conflist => ({
    cniVersion: "1.0.0",
    name,
    plugins: [{ type: plugin, ...extra(prefix), ipam: { type: "containerscale-ipam", dataDir, ...pool } }]
  })
  const run = (list: Conflist, command: "ADD" | "DEL" | "CHECK", containerId: string, netns: string, prevResult?: unknown) =>
    runConflist(list, command, {
      containerId,
      netns,
      ifname: "eth0",
      path: cniPath(),
      runIn: host,
      ...(prevResult === undefined ? {} : { prevResult })
    })
  const usage = (network: string, pool: PoolConfig) =>
    Effect.runPromise(
      Ipam.make({ dataDir }).usage({ network, pool: Result.getOrThrow(resolvePool(pool)) }).pipe(Effect.map((sets) => sets[0]!))
    )

  beforeAll(() => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`))
    host = scope.create("host")
  })

  afterAll(() => {
    try {
      scope.dispose()
      removeLeftovers(prefix)
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true })
    }
  })

  it("ADD puts a pool address in the container, CHECK passes, DEL frees it and may repeat", async () => {
    const network = `${prefix}-a`
    const pool: PoolConfig = { ranges: [[{ subnet: `${subnet}.0/24`, rangeStart: `${subnet}.10`, rangeEnd: `${subnet}.19` }]] }
    const list = conflist(network, pool)
    const c1 = scope.create("c1")

    const add = await run(list, "ADD", "ctr1", netnsPath(c1))
    expect(add.ok, JSON.stringify(add.error)).toBe(true)
    const result = add.result as CniResult
    expect(result.cniVersion).toBe("1.0.0")
    expect(result.ips).toHaveLength(1)
    const address = result.ips[0]!.address
    expect(address).toBe(`${subnet}.10/24`)
    expect(result.ips[0]!.gateway).toBe(`${subnet}.1`)
    expect(interfaceAddresses(c1, "eth0", "inet")).toContain(address)
    expect(result.interfaces?.find((i) => i.name === "eth0")?.sandbox).toBe(netnsPath(c1))
    if (plugin === "bridge") expect(interfaceAddresses(host, `${prefix}br`, "inet")).toContain(`${subnet}.1/24`)

    const held = await usage(network, pool)
    expect(held.size).toBe(10n)
    expect(held.used).toBe(1)
    expect(held.allocations).toEqual([{ containerId: "ctr1", ifname: "eth0", ip: `${subnet}.10` }])

    const check = await run(list, "CHECK", "ctr1", netnsPath(c1), result)
    expect(check.ok, JSON.stringify(check.error)).toBe(true)
    expect(check.calls.map((c) => c.outcome.stdout)).toEqual([""])

    const del = await run(list, "DEL", "ctr1", netnsPath(c1), result)
    expect(del.ok, JSON.stringify(del.error)).toBe(true)
    expect((await usage(network, pool)).used).toBe(0)
    expect(listLinks(c1, "eth0")).toEqual([])

    const again = await run(list, "DEL", "ctr1", netnsPath(c1), result)
    expect(again.ok, JSON.stringify(again.error)).toBe(true)
    const noNetns = await run(list, "DEL", "ctr1", "")
    expect(noNetns.ok, JSON.stringify(noNetns.error)).toBe(true)
    const neverAdded = await run(list, "DEL", "ctr-never", "")
    expect(neverAdded.ok, JSON.stringify(neverAdded.error)).toBe(true)
  })

  it("an address freed by DEL (netns already gone, CNI_NETNS empty) goes to the next container", async () => {
    const network = `${prefix}-b`
    const pool: PoolConfig = { ranges: [[{ subnet: `${subnet}.0/24`, rangeStart: `${subnet}.20`, rangeEnd: `${subnet}.20` }]] }
    const list = conflist(network, pool)
    const c2 = scope.create("c2")
    const c3 = scope.create("c3")

    const first = await run(list, "ADD", "ctr2", netnsPath(c2))
    expect(first.ok, JSON.stringify(first.error)).toBe(true)
    expect(interfaceAddresses(c2, "eth0", "inet")).toEqual([`${subnet}.20/24`])

    const full = await run(list, "ADD", "ctr3", netnsPath(c3))
    expect(full.ok).toBe(false)
    expect(full.calls.at(-1)?.outcome.exitCode).not.toBe(0)
    expect((full.error as { code?: number }).code).toBe(11)
    expect((await usage(network, pool)).allocations.map((a) => a.containerId)).toEqual(["ctr2"])

    // the runtime removed the container's netns before telling CNI: DEL arrives without one
    deleteNetns(c2)
    const del = await run(list, "DEL", "ctr2", "", first.result)
    expect(del.ok, JSON.stringify(del.error)).toBe(true)
    expect((await usage(network, pool)).used).toBe(0)

    // ctr3's failed ADD is cleaned up the way a runtime does it, then retried
    expect((await run(list, "DEL", "ctr3", netnsPath(c3))).ok).toBe(true)
    const retry = await run(list, "ADD", "ctr3", netnsPath(c3))
    expect(retry.ok, JSON.stringify(retry.error)).toBe(true)
    expect((retry.result as CniResult).ips[0]!.address).toBe(`${subnet}.20/24`)
    expect(interfaceAddresses(c3, "eth0", "inet")).toEqual([`${subnet}.20/24`])
    expect((await usage(network, pool)).allocations).toEqual([{ containerId: "ctr3", ifname: "eth0", ip: `${subnet}.20` }])

    expect((await run(list, "DEL", "ctr3", netnsPath(c3), retry.result)).ok).toBe(true)
    expect((await usage(network, pool)).used).toBe(0)
  })

  it("leaves no link on the real host", () => {
    expect(listLinks(undefined, prefix)).toEqual([])
  })
})

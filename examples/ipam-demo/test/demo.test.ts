import { interfaceAddresses, ipJson, listLinks, listNetns, netnsExists } from "@containerscale/testing"
import * as fs from "node:fs"
import { describe, expect, it } from "vitest"
import { runDemo } from "../src/demo.ts"

describe("ipam demo", () => {
  it("adds three containers, shows the pool, deletes them and leaves nothing behind", async () => {
    const lines: Array<string> = []
    let liveChecks = 0
    const report = await runDemo({
      subnet: "10.231.0.0/24",
      log: (line) => lines.push(line),
      afterAdd: (containers) => {
        for (const c of containers) {
          expect(interfaceAddresses(c.netns, "eth0", "inet")).toEqual([c.address])
          const routes = ipJson<Array<{ dst: string; gateway?: string }>>(c.netns, ["route", "show", "default"])
          expect(routes).toEqual([expect.objectContaining({ dst: "default", gateway: "10.231.0.1" })])
          liveChecks++
        }
      }
    })

    expect(liveChecks).toBe(3)
    expect(report.containers.map((c) => c.address)).toEqual(["10.231.0.2/24", "10.231.0.3/24", "10.231.0.4/24"])
    for (const c of report.containers) expect(c.seen).toEqual([c.address])

    expect(report.poolAfterAdd.size).toBe(253n)
    expect(report.poolAfterAdd.used).toBe(3)
    expect(report.poolAfterAdd.allocations.map((a) => `${a.ip} ${a.containerId}`)).toEqual(
      report.containers.map((c) => `${c.address.split("/")[0]} ${c.id}`)
    )
    const [c1, c2, c3] = report.containers
    expect(report.poolAfterFirstDel.used).toBe(2)
    expect(report.poolAfterFirstDel.allocations.map((a) => a.containerId)).toEqual([c1!.id, c3!.id])
    expect(report.poolAtEnd.used).toBe(0)
    expect(report.poolAtEnd.allocations).toEqual([])

    expect(lines.some((l) => l.includes(`ip -n ${c2!.netns} -br addr`) && l.includes("10.231.0.3/24"))).toBe(true)
    expect(lines).toContain(`  10.231.0.3 -> ${c2!.id} (eth0)`)

    expect(listNetns(report.prefix)).toEqual([])
    for (const c of report.containers) expect(netnsExists(c.netns)).toBe(false)
    expect(listLinks(undefined, report.prefix.slice(0, -1))).toEqual([])
    const dataDir = /data in (\S+)/.exec(lines[0]!)?.[1]
    expect(dataDir).toBeDefined()
    expect(fs.existsSync(dataDir!)).toBe(false)
  })
})

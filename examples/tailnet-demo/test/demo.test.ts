import { interfaceAddresses, listNetns, processesWith } from "@containerscale/testing"
import { describe, expect, it } from "vitest"
import { runTailnetDemo } from "../src/demo.ts"

const tailscaleds = () => processesWith("cstn")

describe.each(["real", "stand-in"] as const)("tailnet demo on the %s tailnet", (tailnet) => {
  it("puts two containers on the tailnet, one reaches the other over it, and nothing is left", async () => {
    const lines: Array<string> = []
    let checked = false
    const report = await runTailnetDemo({
      tailnet,
      log: (line) => lines.push(line),
      whileUp: (members) => {
        for (const m of members) {
          expect(interfaceAddresses(m.netns, "tailscale0", "inet")).toEqual([m.tailnet[0]])
        }
        checked = true
      }
    })
    expect(checked).toBe(true)
    expect(report.tailnet).toBe(tailnet)
    expect(report.nodesWhileUp.map((n) => n.name)).toEqual(["web", "db"])
    expect(report.nodesWhileUp.every((n) => n.online && n.tags.includes("tag:demo"))).toBe(true)
    for (const [i, m] of report.members.entries()) {
      expect(m.tailnet.map((a) => a.split("/")[0])).toEqual(report.nodesWhileUp[i]!.addresses)
    }
    expect(report.peersSeen).toEqual([expect.stringContaining("db.")])
    expect(report.pinged).toBe(true)
    expect(report.nodesAtEnd).toEqual([])
    expect(lines.some((l) => l.startsWith("web pings db over the tailnet"))).toBe(true)
    expect(listNetns(report.prefix)).toEqual([])
    expect(tailscaleds()).toEqual([])
  }, 300_000)
})

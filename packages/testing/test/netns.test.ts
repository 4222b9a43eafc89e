import {
  createNetns,
  deleteNetns,
  interfaceAddresses,
  ipJson,
  leftovers,
  listNetns,
  netnsExists,
  netnsPath,
  netnsScope,
  removeLeftovers,
  runCommand,
  uniquePrefix,
  withNetns
} from "@containerscale/testing"
import { afterAll, describe, expect, it } from "vitest"

const prefix = uniquePrefix()

afterAll(() => removeLeftovers(prefix))

describe("netns helpers", () => {
  it("uniquePrefix is cst and 6 hex digits, different each time", () => {
    const a = uniquePrefix()
    expect(a).toMatch(/^cst[0-9a-f]{6}$/)
    expect(uniquePrefix("csdemo")).toMatch(/^csdemo[0-9a-f]{6}$/)
    expect(new Set(Array.from({ length: 20 }, () => uniquePrefix())).size).toBe(20)
  })

  it("creates a namespace with loopback up, and deletes it twice without error", () => {
    const name = `${prefix}-a`
    expect(createNetns(name)).toBe(netnsPath(name))
    expect(netnsExists(name)).toBe(true)
    expect(listNetns(prefix)).toEqual([name])
    const lo = ipJson<Array<{ ifname: string; flags: Array<string> }>>(name, ["link", "show", "lo"])
    expect(lo[0]!.flags).toContain("UP")
    expect(interfaceAddresses(name, "lo", "inet")).toEqual(["127.0.0.1/8"])
    deleteNetns(name)
    deleteNetns(name)
    expect(netnsExists(name)).toBe(false)
  })

  it("ipJson returns [] when ip prints nothing", () => {
    const name = `${prefix}-b`
    createNetns(name)
    try {
      expect(ipJson(name, ["route", "show", "default"])).toEqual([])
    } finally {
      deleteNetns(name)
    }
  })

  it("withNetns removes its namespaces when the callback throws", async () => {
    const names = [`${prefix}-w1`, `${prefix}-w2`]
    await expect(withNetns(names, (paths) => {
      expect(paths).toEqual(names.map(netnsPath))
      expect(names.every(netnsExists)).toBe(true)
      throw new Error("boom")
    })).rejects.toThrow("boom")
    expect(names.some(netnsExists)).toBe(false)
  })

  it("a scope removes what it made and strays with its prefix, links in them included", () => {
    const scope = netnsScope(`${prefix}-s-`)
    const x = scope.create("x")
    const y = scope.create("y")
    runCommand("ip", ["netns", "add", `${prefix}-s-stray`])
    runCommand("ip", ["-n", x, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", y])
    expect(listNetns(`${prefix}-s-`).sort()).toEqual([`${prefix}-s-stray`, x, y].sort())
    scope.dispose()
    expect(listNetns(`${prefix}-s-`)).toEqual([])
    expect(leftovers(prefix)).toEqual({ netns: [], links: [] })
  })
})

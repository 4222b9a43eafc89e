import {
  libcniCacheFiles,
  type PodmanSandbox,
  podmanSandbox,
  distBin,
  referencePluginDir
} from "@containerscale/sandbox"
import {
  listLinks,
  netnsPath,
  netnsScope,
  runCommand,
  uniquePrefix
} from "@containerscale/testing"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

/**
 * Rootful Podman 4.3 (CNI backend, runc) on a conflist with `containerscale` in router mode, run
 * inside a throwaway namespace that stands for the node, so the host ends, routes and gateway
 * addresses stay there.
 */

const prefix = uniquePrefix()
const network = `${prefix}-net`
const scope = netnsScope(`${prefix}-`)

describe("podman 4.3 with containerscale in router mode", { timeout: 180_000 }, () => {
  let sandbox: PodmanSandbox
  let node = ""

  beforeAll(() => {
    node = netnsPath(scope.create("node"))
    runCommand("nsenter", [`--net=${node}`, "ip", "link", "set", "lo", "up"])
    sandbox = podmanSandbox({
      prefix,
      network,
      netns: node,
      cniPluginDirs: [distBin(), referencePluginDir],
      conflist: (dir) => ({
        cniVersion: "0.4.0",
        name: network,
        plugins: [{
          type: "containerscale",
          mode: "router",
          ipam: { type: "containerscale-ipam", dataDir: path.join(dir, "ipam"), ranges: [[{ subnet: "10.236.9.0/24" }]] }
        }]
      })
    })
  }, 120_000)

  afterAll(() => {
    try {
      sandbox?.dispose()
    } finally {
      scope.dispose()
    }
  }, 120_000)

  it("a container gets its address, reaches the node and a second container, and leaves nothing behind", () => {
    const { podman, image } = sandbox
    podman(["run", "-d", "--name", `${prefix}-a`, "--network", network, image, "sleep", "120"])
    const output = podman([
      "run", "--rm", "--name", `${prefix}-b`, "--network", network, image,
      "sh", "-c", "ip -o -4 addr show eth0 && ping -c 1 -W 3 10.236.9.1 && ping -c 1 -W 3 10.236.9.2 && echo reached"
    ])
    expect(output).toContain("inet 10.236.9.3/24")
    expect(output).toContain("reached")
    podman(["rm", "-f", "-t", "0", `${prefix}-a`])
    expect(listLinks(path.basename(node), "cs")).toEqual([])
    expect(libcniCacheFiles(network)).toEqual([])
    const journal = fs.readFileSync(path.join(sandbox.dir, "ipam", network, "allocations"), "utf8").trim().split("\n")
    expect(journal.filter((l) => l.startsWith("+")).length).toBe(journal.filter((l) => l.startsWith("-")).length)
  })
})

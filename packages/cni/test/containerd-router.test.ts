import {
  type ContainerdSandbox,
  containerdSandbox,
  libcniCacheFiles,
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
import type { ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

/**
 * containerd 1.6 with `ctr run --cni` on a conflist with `containerscale` in router mode. ctr runs
 * CNI itself, inside a throwaway namespace that stands for the node; containerd (started by the
 * test) creates the containers' namespaces.
 */

const prefix = uniquePrefix()
const network = `${prefix}-net`
const scope = netnsScope(`${prefix}-`)

const exited = (child: ChildProcess): Promise<{ code: number | null; output: string }> =>
  new Promise((resolve) => {
    let output = ""
    child.stdout?.on("data", (d) => (output += String(d)))
    child.stderr?.on("data", (d) => (output += String(d)))
    child.on("close", (code) => resolve({ code, output }))
  })

describe("containerd 1.6 (ctr run --cni) with containerscale in router mode", { timeout: 180_000 }, () => {
  let sandbox: ContainerdSandbox
  let node = ""

  beforeAll(async () => {
    node = netnsPath(scope.create("node"))
    runCommand("nsenter", [`--net=${node}`, "ip", "link", "set", "lo", "up"])
    sandbox = await containerdSandbox({
      prefix,
      network,
      netns: node,
      plugins: {
        "containerscale": path.join(distBin(), "containerscale"),
        "containerscale-ipam": path.join(distBin(), "containerscale-ipam"),
        "loopback": path.join(referencePluginDir, "loopback")
      },
      conflist: (dir) => ({
        cniVersion: "1.0.0",
        name: network,
        plugins: [{
          type: "containerscale",
          mode: "router",
          ipam: { type: "containerscale-ipam", dataDir: path.join(dir, "ipam"), ranges: [[{ subnet: "10.236.10.0/24" }]] }
        }]
      })
    })
  }, 120_000)

  afterAll(async () => {
    try {
      await sandbox?.dispose()
    } finally {
      scope.dispose()
    }
  }, 120_000)

  it("a container gets its address, reaches the node and a second container, and leaves nothing behind", async () => {
    const { ctr, image, spawnCtr } = sandbox
    const a = spawnCtr(["run", "--rm", "--cni", image, `${prefix}-a`, "sleep", "120"])
    const aDone = exited(a)
    const deadline = Date.now() + 30_000
    while (!/\bRUNNING\b/.test(ctr(["task", "ls"]).split("\n").find((l) => l.startsWith(`${prefix}-a `)) ?? "")) {
      if (a.exitCode !== null || Date.now() > deadline) throw new Error(`container a did not start: ${(await aDone).output}`)
      await new Promise((r) => setTimeout(r, 100))
    }
    const output = ctr([
      "run", "--rm", "--cni", image, `${prefix}-b`,
      "sh", "-c", "ip -o -4 addr show eth0 && ping -c 1 -W 3 10.236.10.1 && ping -c 1 -W 3 10.236.10.2 && echo reached"
    ])
    expect(output).toContain("inet 10.236.10.3/24")
    expect(output).toContain("reached")

    ctr(["task", "kill", "-s", "SIGKILL", `${prefix}-a`])
    const { code } = await aDone
    expect(code).toBe(137)
    expect(ctr(["containers", "ls", "-q"]).trim()).toBe("")
    expect(listLinks(path.basename(node), "cs")).toEqual([])
    expect(libcniCacheFiles(network)).toEqual([])
    const journal = fs.readFileSync(path.join(sandbox.dir, "ipam", network, "allocations"), "utf8").trim().split("\n")
    expect(journal.filter((l) => l.startsWith("+")).length).toBe(2)
    expect(journal.filter((l) => l.startsWith("-")).length).toBe(2)
  })
})

import { dockerSandbox, type DockerSandbox } from "@containerscale/sandbox"
import { listLinks, netnsPath, netnsScope, processesWith, processRunning, uniquePrefix } from "@containerscale/testing"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

/**
 * The private dockerd harness alone (no containerscale driver): it starts inside a throwaway node
 * namespace, runs a container, survives a restart, and dispose leaves nothing behind.
 */

const prefix = uniquePrefix()
const scope = netnsScope(`${prefix}-`)

const optContainerdBefore = fs.existsSync("/opt/containerd")

describe("private dockerd sandbox", { timeout: 180_000 }, () => {
  let sandbox: DockerSandbox | undefined
  let node = ""

  beforeAll(async () => {
    node = netnsPath(scope.create("node"))
    sandbox = await dockerSandbox({ prefix, netns: node, liveRestore: true })
  }, 120_000)

  afterAll(async () => {
    try {
      await sandbox?.dispose()
    } finally {
      scope.dispose()
    }
  }, 120_000)

  it("runs a container without a network, and a user-defined bridge network stays inside the node namespace", async () => {
    const s = sandbox!
    expect(s.docker(["run", "--rm", "--network", "none", s.image, "true"])).toBe("")
    s.docker(["network", "create", "-d", "bridge", "--subnet", "10.237.250.0/24", "-o", `com.docker.network.bridge.name=${prefix}br`, `${prefix}-br`])
    const out = s.docker(["run", "--rm", "--network", `${prefix}-br`, s.image, "sh", "-c", "ip -o -4 addr show eth0 && ping -c1 -W3 10.237.250.1 && echo reached"])
    expect(out).toContain("10.237.250.2/24")
    expect(out).toContain("reached")
    expect(listLinks(path.basename(node), `${prefix}br`)).toEqual([`${prefix}br`])
    expect(listLinks(undefined, `${prefix}br`)).toEqual([])
    s.docker(["network", "rm", `${prefix}-br`])
  })

  it("restart (live-restore) keeps the image and a running container, and answers again", async () => {
    const s = sandbox!
    s.docker(["run", "-d", "--name", `${prefix}-live`, "--network", "none", s.image, "sleep", "300"])
    const before = s.pid()
    await s.restart()
    expect(s.pid()).not.toBe(before)
    expect(s.docker(["images", "-q", s.image]).trim()).not.toBe("")
    expect(s.docker(["exec", `${prefix}-live`, "echo", "alive"])).toBe("alive\n")
    const r = await s.dockerAsync(["run", "--rm", "--network", "none", s.image, "echo", "hi"])
    expect(r).toMatchObject({ code: 0, stdout: "hi\n" })
  })

  it("dispose stops the daemon and its containerd and removes its directory", async () => {
    const s = sandbox!
    sandbox = undefined
    await s.dispose()
    expect(fs.existsSync(s.dir)).toBe(false)
    expect(processesWith(s.dir)).toEqual([])
    expect(fs.readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(s.dir)
    expect(fs.existsSync("/etc/docker/key.json")).toBe(false)
    // dockerd's containerd makes /opt/containerd; the last sandbox to go removes it
    if (!optContainerdBefore && !processRunning("containerd")) expect(fs.existsSync("/opt/containerd")).toBe(false)
  })
})

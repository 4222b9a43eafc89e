import {
  containersConf,
  distBin,
  importRootfs,
  libcniCacheFiles,
  listLinks,
  netnsPath,
  netnsScope,
  referencePluginDir,
  removeLibcniCache,
  runCommand,
  uniquePrefix,
  writeBusyboxRootfs
} from "@containerscale/testing"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

/**
 * Rootful Podman 4.3 (CNI backend, runc) on a conflist with `containerscale` in router mode.
 * Podman runs inside a throwaway namespace that stands for the node (entered with nsenter, which
 * keeps the host's /sys and cgroups), so the host ends, routes and gateway addresses stay there.
 */

const prefix = uniquePrefix()
const network = `${prefix}-net`
const image = `localhost/${prefix}-busybox:latest`
const scope = netnsScope(`${prefix}-`)

describe("podman 4.3 with containerscale in router mode", { timeout: 180_000 }, () => {
  let dir = ""
  let conf = ""
  let node = ""
  const podman = (args: ReadonlyArray<string>) =>
    runCommand("nsenter", [`--net=${node}`, "podman", ...args], { env: { ...process.env, CONTAINERS_CONF: conf }, timeoutMs: 120_000 })

  beforeAll(() => {
    node = netnsPath(scope.create("node"))
    runCommand("nsenter", [`--net=${node}`, "ip", "link", "set", "lo", "up"])
    dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`))
    const netd = path.join(dir, "net.d")
    fs.mkdirSync(netd)
    conf = path.join(dir, "containers.conf")
    fs.writeFileSync(conf, containersConf({ cniPluginDirs: [distBin(), referencePluginDir], networkConfigDir: netd }))
    fs.writeFileSync(
      path.join(netd, `${network}.conflist`),
      JSON.stringify({
        cniVersion: "0.4.0",
        name: network,
        plugins: [{
          type: "containerscale",
          mode: "router",
          ipam: { type: "containerscale-ipam", dataDir: path.join(dir, "ipam"), ranges: [[{ subnet: "10.236.9.0/24" }]] }
        }]
      })
    )
    writeBusyboxRootfs(path.join(dir, "rootfs"))
    importRootfs(conf, path.join(dir, "rootfs"), image)
  }, 120_000)

  afterAll(() => {
    const errors: Array<unknown> = []
    const attempt = (f: () => void) => {
      try {
        f()
      } catch (e) {
        errors.push(e)
      }
    }
    attempt(() => {
      const ids = podman(["ps", "-a", "-q", "--filter", `name=^${prefix}`]).split("\n").filter((s) => s !== "")
      if (ids.length > 0) podman(["rm", "-f", "-t", "0", ...ids])
    })
    attempt(() => {
      if (podman(["images", "-q", image]).trim() !== "") podman(["rmi", "-f", image])
    })
    attempt(() => removeLibcniCache(network))
    attempt(() => scope.dispose())
    attempt(() => fs.rmSync(dir, { recursive: true, force: true }))
    if (errors.length > 0) throw new AggregateError(errors, "podman test cleanup failed")
  }, 120_000)

  it("a container gets its address, reaches the node and a second container, and leaves nothing behind", () => {
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
    const journal = fs.readFileSync(path.join(dir, "ipam", network, "allocations"), "utf8").trim().split("\n")
    expect(journal.filter((l) => l.startsWith("+")).length).toBe(journal.filter((l) => l.startsWith("-")).length)
  })
})

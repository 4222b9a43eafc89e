import { Ipam, type PoolConfig, resolvePool } from "@containerscale/core"
import {
  libcniCacheFiles,
  type PodmanSandbox,
  podmanSandbox,
  distBin,
  referencePluginDir
} from "@containerscale/sandbox"
import { ipJson, listLinks, removeLeftovers, uniquePrefix } from "@containerscale/testing"
import { Effect, Result } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { setTimeout as sleep } from "node:timers/promises"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

// Rootful podman 4.3 with its CNI backend runs the reference bridge plugin with
// containerscale-ipam, from a private containers.conf and network config directory.

const prefix = uniquePrefix()
const network = `${prefix}-net`
const bridge = `${prefix}br`
const pool: PoolConfig = { ranges: [[{ subnet: "10.234.0.0/24", rangeStart: "10.234.0.10", rangeEnd: "10.234.0.50" }]] }

describe("podman 4.3 (CNI backend): bridge + containerscale-ipam", { timeout: 180_000 }, () => {
  let sandbox: PodmanSandbox
  let dataDir = ""

  const run = (args: ReadonlyArray<string>) => sandbox.podman(args)
  const usage = () =>
    Effect.runPromise(
      Ipam.make({ dataDir }).usage({ network, pool: Result.getOrThrow(resolvePool(pool)) }).pipe(Effect.map((sets) => sets[0]!))
    )
  /** podman releases the address when it tears the container down, which may finish after `run` returns */
  const eventuallyEmpty = async () => {
    const deadline = Date.now() + 30_000
    let last = await usage()
    while (last.used > 0 && Date.now() < deadline) {
      await sleep(200)
      last = await usage()
    }
    return last
  }
  const eth0Address = (output: string) => /inet (\d+\.\d+\.\d+\.\d+\/\d+)/.exec(output)?.[1]

  beforeAll(() => {
    if (!fs.existsSync(path.join(distBin(), "containerscale-ipam"))) {
      throw new Error(`${distBin()}/containerscale-ipam is missing: run npm run build first`)
    }
    sandbox = podmanSandbox({
      prefix,
      network,
      cniPluginDirs: [distBin(), referencePluginDir],
      conflist: (dir) => {
        dataDir = path.join(dir, "ipam")
        return {
          cniVersion: "0.4.0",
          name: network,
          plugins: [{ type: "bridge", bridge, isGateway: false, ipMasq: false, ipam: { type: "containerscale-ipam", dataDir, ...pool } }]
        }
      }
    })
  }, 120_000)

  afterAll(() => {
    try {
      sandbox?.dispose()
    } finally {
      removeLeftovers(prefix)
    }
  }, 120_000)

  it("gives a container an address from the pool and frees it when the container goes", async () => {
    const output = run(["run", "--rm", "--name", `${prefix}-a`, "--network", network, sandbox.image, "ip", "-o", "-4", "addr", "show", "eth0"])
    expect(eth0Address(output)).toBe("10.234.0.10/24")
    expect((await eventuallyEmpty()).used).toBe(0)
  })

  it("honours --ip", async () => {
    const output = run(["run", "--rm", "--name", `${prefix}-b`, "--network", network, "--ip", "10.234.0.42", sandbox.image, "ip", "-o", "-4", "addr", "show", "eth0"])
    expect(eth0Address(output)).toBe("10.234.0.42/24")
    expect((await eventuallyEmpty()).used).toBe(0)
  })

  it("records the running container's id and releases on rm", async () => {
    const id = run(["run", "-d", "--name", `${prefix}-c`, "--network", network, sandbox.image, "sleep", "600"]).trim()
    expect(id).toMatch(/^[0-9a-f]{64}$/)
    const ip = run(["inspect", "-f", `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`, id]).trim()
    const held = await usage()
    expect(held.allocations).toEqual([{ containerId: id, ifname: "eth0", ip }])
    expect(libcniCacheFiles(network)).toHaveLength(1)

    run(["rm", "-f", "-t", "0", id])
    expect((await eventuallyEmpty()).used).toBe(0)
    expect(libcniCacheFiles(network)).toEqual([])
  })

  it("leaves the bridge without ports once the containers are gone", () => {
    expect(listLinks(undefined, prefix)).toEqual([bridge])
    expect(ipJson(undefined, ["link", "show", "master", bridge])).toEqual([])
  })
})

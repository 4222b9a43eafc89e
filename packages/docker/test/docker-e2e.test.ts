import {
  type DockerDriver,
  type DockerSandbox,
  dockerSandbox,
  startDockerDriver,
  distBin,
  testingBin
} from "@containerscale/sandbox"
import {
  cleanUpAll,
  listLinks,
  netnsPath,
  netnsScope,
  runCommand,
  uniquePrefix,
  waitUntil
} from "@containerscale/testing"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

/**
 * containerscale-docker with a real dockerd 20.10: the driver (NetworkDriver + IpamDriver on one
 * socket, found through the spec file it writes to /etc/docker/plugins) and a private dockerd both
 * run inside a throwaway namespace that stands for the node, so the host-side veths and gateway
 * addresses never reach the real host. dockerd runs with live-restore, so containers outlive a
 * daemon restart as they would on a production host.
 */

interface Up {
  readonly loginServer: string
  readonly authKey: string
  readonly apiUrl: string
  readonly apiKey: string
}
interface ApiNode {
  readonly id: string
  readonly name: string
  readonly ipAddresses: ReadonlyArray<string>
  readonly online: boolean
}

const prefix = uniquePrefix()
const scope = netnsScope(`${prefix}-`)
const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-e2e-`))
const stateDir = path.join(dir, "state")
const store = path.join(stateDir, "docker")
const driverName = `${prefix}drv`
/** CONTAINERSCALE_DOCKER runs another build of the driver (a private copy, a debug build) */
const binary = process.env.CONTAINERSCALE_DOCKER ?? path.join(distBin(), "containerscale-docker")
const testnetCli = path.join(testingBin(), "containerscale-testnet")
const testnetState = path.join(dir, "testnet")

/** Processes whose command line points into `text` (our dir), optionally only those that also name `and`. */
const processesUnder = (text: string, and = "") =>
  fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p)).filter((pid) => {
    try {
      const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8")
      return Number(pid) !== process.pid && cmdline.includes(text) && cmdline.includes(and)
    } catch {
      return false
    }
  })
/** The member-mode tailscaleds the driver started (the driver's own command line names the state dir too). */
const tailscaleds = () => processesUnder(stateDir, "tailscaled")

const jsonFiles = (sub: string) => {
  try {
    return fs.readdirSync(path.join(store, sub)).filter((f) => f.endsWith(".json"))
  } catch {
    return []
  }
}
const pools = (): Array<{ id: string; subnet: string }> => {
  try {
    return JSON.parse(fs.readFileSync(path.join(store, "pools.json"), "utf8"))
  } catch {
    return []
  }
}

describe("containerscale-docker with dockerd 20.10", { timeout: 240_000 }, () => {
  let sandbox: DockerSandbox
  let driver: DockerDriver
  let node = ""
  let nodeName = ""
  let testnet: Up | undefined

  const docker = (args: ReadonlyArray<string>) => sandbox.docker(args)
  const ipOf = (container: string) =>
    docker(["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container]).trim()
  const run = (net: string, name: string) => docker(["run", "-d", "--name", name, "--network", net, sandbox.image, "sleep", "600"]).trim()
  const exec = (name: string, command: string) => docker(["exec", name, "sh", "-c", command])
  const csLinks = () => listLinks(nodeName, "cs")
  const routerNet = (name: string, subnet: string) =>
    docker(["network", "create", "-d", driverName, "--ipam-driver", driverName, "--subnet", subnet, name]).trim()
  /** After everything of a step is removed: no link, no endpoint, network or pool in the driver's store. */
  const expectNothingLeft = () => {
    expect(csLinks()).toEqual([])
    expect(jsonFiles("endpoints")).toEqual([])
    expect(jsonFiles("networks")).toEqual([])
    expect(pools()).toEqual([])
  }

  const api = async <A>(url: string): Promise<A> => {
    const res = await fetch(`${testnet!.apiUrl}${url}`, { headers: { Authorization: `Bearer ${testnet!.apiKey}` } })
    if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${await res.text()}`)
    return (await res.json()) as A
  }
  const nodes = async () => (await api<{ nodes: Array<ApiNode> }>("/api/v1/node")).nodes

  beforeAll(async () => {
    if (!fs.existsSync(binary)) {
      throw new Error(`${binary} is missing: cd packages/docker && ../../scripts/compile-binary containerscale-docker src/main.ts`)
    }
    nodeName = scope.create("node")
    node = netnsPath(nodeName)
    sandbox = await dockerSandbox({ prefix, netns: node, liveRestore: true })
    driver = await startDockerDriver({ name: driverName, socketDir: path.join(dir, "sock"), stateDir, netns: node, binary })
  }, 120_000)

  afterAll(() =>
    cleanUpAll([
      // containers and networks first (the driver must still answer), then the daemon, then the driver
      () => sandbox?.dispose(),
      () => driver?.dispose(),
      () => tailscaleds().forEach((pid) => process.kill(Number(pid), "SIGKILL")),
      () => testnet !== undefined && runCommand(testnetCli, ["down", "--state", testnetState]),
      () => scope.dispose(),
      () => fs.rmSync(dir, { recursive: true, force: true })
    ]), 120_000)

  it("router mode: two containers reach each other and the gateway; rm and network rm free everything", () => {
    const net = `${prefix}-router`
    routerNet(net, "10.237.10.0/24")
    expect(docker(["network", "inspect", "-f", "{{.Driver}} {{.IPAM.Driver}}", net]).trim()).toBe(`${driverName} ${driverName}`)
    run(net, `${prefix}-a`)
    run(net, `${prefix}-b`)
    const a = ipOf(`${prefix}-a`)
    const b = ipOf(`${prefix}-b`)
    expect(a).toMatch(/^10\.237\.10\.\d+$/)
    expect(b).toMatch(/^10\.237\.10\.\d+$/)
    expect(a).not.toBe(b)
    expect(exec(`${prefix}-a`, "ip -o -4 addr show eth0")).toContain(`${a}/24`)
    const gateway = /default via (\S+)/.exec(exec(`${prefix}-a`, "ip -4 route"))?.[1]
    expect(gateway).toMatch(/^10\.237\.10\.\d+$/)
    expect(exec(`${prefix}-a`, `ping -c1 -W3 ${b} >/dev/null && ping -c1 -W3 ${gateway} >/dev/null && echo reached`)).toBe("reached\n")
    expect(exec(`${prefix}-b`, `ping -c1 -W3 ${a} >/dev/null && echo reached`)).toBe("reached\n")
    expect(csLinks().length).toBe(2)
    // nothing of it on the real host
    expect(listLinks(undefined, "cs").filter((l) => !l.startsWith("cst"))).toEqual([])

    docker(["rm", "-f", `${prefix}-a`, `${prefix}-b`])
    expect(csLinks()).toEqual([])
    expect(jsonFiles("endpoints")).toEqual([])
    docker(["network", "rm", net])
    expectNothingLeft()

    // every address went back: the same network again hands out the same first address
    routerNet(net, "10.237.10.0/24")
    run(net, `${prefix}-c`)
    expect(ipOf(`${prefix}-c`)).toBe(a)
    docker(["rm", "-f", `${prefix}-c`])
    docker(["network", "rm", net])
    expectNothingLeft()
  })

  it("member mode: each container is a tailnet node, they reach each other by 100.x, rm logs the node out", async () => {
    testnet = JSON.parse(runCommand(testnetCli, ["up", "--state", testnetState])) as Up
    const keyFile = path.join(dir, "authkey")
    fs.writeFileSync(keyFile, testnet.authKey, { mode: 0o600 })
    const net = `${prefix}-member`
    docker([
      "network", "create", "-d", driverName, "--ipam-driver", driverName, "--subnet", "10.237.20.0/24",
      "-o", "containerscale.mode=member",
      "-o", `containerscale.login-server=${testnet.loginServer}`,
      "-o", `containerscale.auth-key-file=${keyFile}`,
      "-o", `containerscale.tailscaled-path=${path.join(testingBin(), "tailscaled")}`,
      net
    ])
    // the key is neither in the network's options as dockerd shows them nor in the driver's store
    expect(docker(["network", "inspect", net])).not.toContain(testnet.authKey)
    const records = jsonFiles("networks").map((f) => fs.readFileSync(path.join(store, "networks", f), "utf8"))
    expect(records.length).toBe(1)
    expect(records[0]).not.toContain(testnet.authKey)
    run(net, `${prefix}-ma`)
    run(net, `${prefix}-mb`)
    const tailnetIp = (name: string) =>
      waitUntil(`${name}'s tailscale0 address`, () => /inet (100\.\d+\.\d+\.\d+)\/32/.exec(exec(name, "ip -o -4 addr show tailscale0"))?.[1], 30_000)
        .catch((e) => {
          throw new Error(`${String(e)}\ndriver output:\n${driver.output().slice(-4000)}`)
        })
    const ma = await tailnetIp(`${prefix}-ma`)
    const mb = await tailnetIp(`${prefix}-mb`)
    expect(ma).not.toBe(mb)
    const listed = await waitUntil("both nodes online", async () => {
      const n = await nodes()
      return n.filter((x) => x.online).length === 2 ? n : undefined
    }, 30_000)
    expect(listed.flatMap((n) => n.ipAddresses).filter((ip) => ip.startsWith("100."))).toEqual(expect.arrayContaining([ma, mb]))
    expect(exec(`${prefix}-ma`, `ping -c1 -W3 ${mb} >/dev/null && echo reached`)).toBe("reached\n")
    expect(exec(`${prefix}-mb`, `ping -c1 -W3 ${ma} >/dev/null && echo reached`)).toBe("reached\n")

    docker(["rm", "-f", `${prefix}-ma`])
    // the key is ephemeral: logout deletes the node
    await waitUntil("node a to leave", async () => ((await nodes()).some((n) => n.ipAddresses.includes(ma)) ? undefined : true), 30_000)
    expect((await nodes()).map((n) => n.ipAddresses.includes(mb))).toEqual([true])
    docker(["rm", "-f", `${prefix}-mb`])
    await waitUntil("every node to leave", async () => ((await nodes()).length === 0 ? true : undefined), 30_000)
    await waitUntil("every tailscaled to exit", () => (tailscaleds().length === 0 ? true : undefined), 15_000)
    docker(["network", "rm", net])
    expectNothingLeft()
  })

  it("restarts of the driver and of dockerd: containers keep working, new ones join, no address is handed out twice", async () => {
    const net = `${prefix}-restart`
    routerNet(net, "10.237.30.0/24")
    const seen: Array<string> = []
    const start = (name: string) => {
      run(net, name)
      const ip = ipOf(name)
      expect(ip).toMatch(/^10\.237\.30\.\d+$/)
      seen.push(ip)
      return ip
    }
    const reaches = (from: string, ips: ReadonlyArray<string>) =>
      expect(exec(from, [...ips.map((ip) => `ping -c1 -W3 ${ip} >/dev/null`), "echo reached"].join(" && "))).toBe("reached\n")
    const gateway = () => /default via (\S+)/.exec(exec(`${prefix}-ra`, "ip -4 route"))?.[1] ?? "none"

    const a = start(`${prefix}-ra`)
    const gw = gateway()

    const before = driver.pid()
    await driver.restart()
    expect(driver.pid()).not.toBe(before)
    reaches(`${prefix}-ra`, [gw])
    const b = start(`${prefix}-rb`)
    reaches(`${prefix}-rb`, [a, gw])
    expect(exec(`${prefix}-rb`, "ip -4 route")).toContain(`default via ${gw}`)

    await sandbox.restart()
    reaches(`${prefix}-ra`, [b, gw])
    reaches(`${prefix}-rb`, [a, gw])
    const c = start(`${prefix}-rc`)
    reaches(`${prefix}-rc`, [a, b, gw])

    // both again, back to back, with a container started in between
    await driver.restart()
    await sandbox.restart()
    const d = start(`${prefix}-rd`)
    reaches(`${prefix}-rd`, [a, b, c, gw])
    expect(new Set(seen).size).toBe(seen.length)
    expect(seen).not.toContain(gw)
    expect(csLinks().length).toBe(4)

    docker(["rm", "-f", `${prefix}-ra`, `${prefix}-rb`, `${prefix}-rc`, `${prefix}-rd`])
    docker(["network", "rm", net])
    expectNothingLeft()
    expect(d).toBeDefined()
  })

  it("bad input: each a clear error from the docker command, and nothing left behind", async () => {
    const fails = async (args: ReadonlyArray<string>, message: RegExp) => {
      const r = await sandbox.dockerAsync(args)
      expect(r.code).not.toBe(0)
      expect(r.stderr).toMatch(message)
      return r.stderr
    }
    const create = (name: string, ...extra: Array<string>) =>
      ["network", "create", "-d", driverName, "--ipam-driver", driverName, ...extra, name]

    await fails(create(`${prefix}-bad1`, "--subnet", "10.237.40.0/24", "-o", "containerscale.foo=1"), /unknown option "containerscale\.foo"/)
    await fails(create(`${prefix}-bad2`, "--subnet", "10.237.41.0/31"), /10\.237\.41\.0\/31 is too small/)
    await fails(create(`${prefix}-bad2`, "--subnet", "10.237.41.5/24"), /10\.237\.41\.5\/24.*host bits/)
    routerNet(`${prefix}-ok`, "10.237.42.0/24")
    await fails(create(`${prefix}-bad3`, "--subnet", "10.237.42.128/25"), /overlaps pool 10\.237\.42\.0\/24/)
    const missing = path.join(dir, "no-such-key")
    await fails(
      create(`${prefix}-bad4`, "--subnet", "10.237.43.0/24", "-o", "containerscale.mode=member", "-o", `containerscale.auth-key-file=${missing}`),
      new RegExp(`cannot read the auth key file ${missing.replaceAll("/", "\\/")}`)
    )
    const names = docker(["network", "ls", "--format", "{{.Name}}"]).split("\n")
    expect(names.filter((n) => n.startsWith(`${prefix}-bad`))).toEqual([])
    expect(pools().map((p) => p.subnet)).toEqual(["10.237.42.0/24"])
    expect(jsonFiles("networks").length).toBe(1)
    docker(["network", "rm", `${prefix}-ok`])
    expectNothingLeft()
    // the refused subnets are free: the overlapping one works now
    routerNet(`${prefix}-bad3`, "10.237.42.128/25")
    docker(["network", "rm", `${prefix}-bad3`])
    expectNothingLeft()
  })
})

import {
  podmanSandbox,
  type PodmanSandbox,
  distBin,
  referencePluginDir,
  testingBin
} from "@containerscale/sandbox"
import {
  netnsPath,
  netnsScope,
  processesWith,
  runCommand,
  uniquePrefix
} from "@containerscale/testing"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

/**
 * Rootful Podman 4.3 (CNI backend, runc) on bridge + containerscale in member mode, with the
 * stand-in tailscaled and the testnet control server (`containerscale-testnet up`, its own
 * process: podman runs synchronously here), inside a throwaway node namespace. The nodes are read
 * through the server's Headscale API, as an operator would.
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
const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-member-`))

const daemons = () => processesWith(`--socket=${dir}/`)

const testnetCli = path.join(testingBin(), "containerscale-testnet")
const testnetState = path.join(dir, "testnet")

describe("podman 4.3 with containerscale in member mode", { timeout: 180_000 }, () => {
  let testnet: Up
  const api = async <A>(method: string, url: string, body?: object): Promise<A> => {
    const res = await fetch(`${testnet.apiUrl}${url}`, {
      method,
      headers: { Authorization: `Bearer ${testnet.apiKey}`, "Content-Type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) })
    })
    if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${await res.text()}`)
    return (await res.json()) as A
  }
  const nodes = async () => (await api<{ nodes: Array<ApiNode> }>("GET", "/api/v1/node")).nodes
  /** A reusable key whose nodes stay after logout, made through the Headscale API as an operator would. */
  const persistentKey = async () => {
    const { users } = await api<{ users: Array<{ id: string }> }>("GET", "/api/v1/user")
    const expiration = new Date(Date.now() + 3_600_000).toISOString()
    const created = await api<{ preAuthKey: { key: string } }>("POST", "/api/v1/preauthkey", {
      user: users[0]!.id, reusable: true, ephemeral: false, expiration, aclTags: []
    })
    return created.preAuthKey.key
  }
  let node = ""
  const sandboxes: Array<PodmanSandbox> = []

  const sandbox = (name: string, key: string, ephemeral: boolean, subnet: string) =>
    podmanSandbox({
      prefix: `${prefix}${name}`,
      network: `${prefix}-${name}`,
      netns: node,
      cniPluginDirs: [distBin(), referencePluginDir],
      conflist: () => ({
        cniVersion: "0.4.0",
        name: `${prefix}-${name}`,
        plugins: [
          {
            type: "bridge", bridge: `${prefix}${name}`, isGateway: true, ipMasq: false,
            ipam: { type: "containerscale-ipam", dataDir: path.join(dir, "ipam"), ranges: [[{ subnet }]] }
          },
          {
            type: "containerscale",
            authKey: key,
            ephemeral,
            loginServer: testnet.loginServer,
            tailscaledPath: path.join(testingBin(), "tailscaled"),
            stateDir: path.join(dir, "members"),
            timeoutSeconds: 15
          }
        ]
      })
    })

  beforeAll(async () => {
    node = netnsPath(scope.create("node"))
    runCommand("nsenter", [`--net=${node}`, "ip", "link", "set", "lo", "up"])
    testnet = JSON.parse(runCommand(testnetCli, ["up", "--state", testnetState])) as Up
  }, 120_000)

  afterAll(async () => {
    try {
      for (const s of sandboxes) s.dispose()
      for (const pid of daemons()) process.kill(Number(pid), "SIGKILL")
      runCommand(testnetCli, ["down", "--state", testnetState])
    } finally {
      scope.dispose()
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }, 120_000)

  it("a container becomes a tailnet node, reaches a second one over the tailnet, and leaves when it stops", async () => {
    const s = sandbox("e", testnet.authKey, true, "10.236.30.0/24") // `up` hands out a reusable, ephemeral key
    sandboxes.push(s)
    s.podman(["run", "-d", "--name", `${prefix}e-a`, "--network", `${prefix}-e`, s.image, "sleep", "120"])
    const a = (await nodes()).find((n) => n.name === `${prefix}e-a`)
    expect(a?.online).toBe(true)
    const output = s.podman([
      "run", "--rm", "--name", `${prefix}e-b`, "--network", `${prefix}-e`, s.image,
      "sh", "-c", `ip -o addr show tailscale0 && ping -c 1 -W 3 ${a!.ipAddresses[0]} && echo reached`
    ])
    expect(output).toMatch(/tailscale0\s+inet 100\.\d+\.\d+\.\d+\/32/)
    expect(output).toContain("reached")
    s.podman(["stop", "-t", "0", `${prefix}e-a`])
    expect(await nodes()).toEqual([])
    expect(daemons()).toEqual([])
  })

  it("stop and start of the same named container keeps its node id and address", async () => {
    const s = sandbox("p", await persistentKey(), false, "10.236.31.0/24")
    sandboxes.push(s)
    s.podman(["run", "-d", "--name", `${prefix}p-a`, "--network", `${prefix}-p`, s.image, "sleep", "120"])
    const first = (await nodes()).find((n) => n.name === `${prefix}p-a`)!
    s.podman(["stop", "-t", "0", `${prefix}p-a`])
    expect(daemons()).toEqual([])
    s.podman(["start", `${prefix}p-a`])
    const second = (await nodes()).find((n) => n.name === `${prefix}p-a`)!
    expect(second.id).toBe(first.id)
    expect(second.ipAddresses).toEqual(first.ipAddresses)
    expect(second.online).toBe(true)
    expect(s.podman(["exec", `${prefix}p-a`, "ip", "-o", "-4", "addr", "show", "tailscale0"])).toContain(`${first.ipAddresses[0]}/32`)
    s.podman(["rm", "-f", "-t", "0", `${prefix}p-a`])
    expect(daemons()).toEqual([])
  })
})

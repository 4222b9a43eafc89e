import { startRealTailnet, tailnetRuntimeAvailable, testingBin } from "@containerscale/sandbox"
import { type NetnsScope, startTestnet } from "@containerscale/testing"
import * as path from "node:path"

/** A node as the control server lists it, the same for the real Headscale and the stand-in. */
export interface DemoNode {
  readonly id: string
  readonly name: string
  readonly addresses: ReadonlyArray<string>
  readonly online: boolean
  readonly tags: ReadonlyArray<string>
}

/** Where the demo's containers join: a real Headscale with real tailscaled, or the stand-ins. */
export type DemoTailnetKind = "real" | "stand-in"

export interface DemoTailnet {
  readonly kind: DemoTailnetKind
  readonly description: string
  readonly loginServer: string
  readonly authKey: string
  readonly tailscaled: string
  /** the namespace standing for the node the containers run on, with `subnet` routed to it */
  readonly node: string
  readonly nodes: () => Promise<ReadonlyArray<DemoNode>>
  readonly close: () => Promise<void>
}

/**
 * The real tailnet: tailscaled and Headscale built from their Go modules (once, cached), Headscale
 * and a DERP server in a hub namespace, the node a namespace of its own on the hub's bridge.
 */
export const realTailnet = async (subnet: string, tags: ReadonlyArray<string>, log: (line: string) => void): Promise<DemoTailnet> => {
  const tailnet = await startRealTailnet({ progress: (line) => log(line) })
  try {
    const user = await tailnet.createUser("demo")
    const key = await tailnet.createAuthKey({ user, reusable: true, ephemeral: true, tags })
    const node = tailnet.addHost("node", { routedSubnets: [subnet] })
    const rt = tailnet.runtime
    return {
      kind: "real",
      description: `Headscale ${rt.headscaleVersion} at ${tailnet.loginServer} and a DERP server in namespace ${tailnet.hub}; tailscaled ${rt.tailscaleVersion}`,
      loginServer: tailnet.loginServer,
      authKey: key.key,
      tailscaled: rt.tailscaled,
      node: node.netns,
      nodes: async () =>
        (await tailnet.nodes()).map((n) => ({
          id: String(n.id),
          name: String(n.given_name ?? n.name),
          addresses: [...(n.ip_addresses ?? [])],
          online: n.online === true,
          tags: [...(n.tags ?? [])]
        })),
      close: tailnet.close
    }
  } catch (e) {
    await tailnet.close()
    throw e
  }
}

/** The stand-ins: the testnet control server and the stand-in tailscaled, started in this process. */
export const standInTailnet = async (dir: string, scope: NetnsScope, tags: ReadonlyArray<string>): Promise<DemoTailnet> => {
  const testnet = await startTestnet({ stateDir: path.join(dir, "testnet") })
  const authKey = await testnet.createAuthKey({ reusable: true, ephemeral: true, tags: [...tags] })
  return {
    kind: "stand-in",
    description: `the stand-in control server (loginServer ${testnet.loginServer}, Headscale API ${testnet.apiUrl}) and the stand-in tailscaled`,
    loginServer: testnet.loginServer,
    authKey,
    tailscaled: path.join(testingBin(), "tailscaled"),
    node: scope.create("node"),
    nodes: async () =>
      testnet.nodes().map((n) => ({ id: String(n.id), name: n.givenName, addresses: n.addresses, online: n.online, tags: n.tags })),
    close: () => testnet.close()
  }
}

/** The real tailnet when this machine has Go to build it, else the stand-ins, unless asked for one. */
export const chooseTailnet = (wanted: DemoTailnetKind | undefined, log: (line: string) => void): DemoTailnetKind => {
  if (wanted !== undefined) return wanted
  if (tailnetRuntimeAvailable()) return "real"
  log("no Go on this machine to build the real tailscaled and Headscale: using the stand-ins (install Go 1.26 for the real tailnet)")
  return "stand-in"
}

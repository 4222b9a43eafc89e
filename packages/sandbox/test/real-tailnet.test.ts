import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import { promisify } from "node:util"
import { type RealTailnet, startRealTailnet } from "../src/tailnet/fixture.ts"

/**
 * The real tailnet fixture itself: Headscale and derper in a hub namespace, two real tailscaled
 * peers in namespaces of their own, a direct WireGuard path between them and MagicDNS.
 */

const execFileAsync = promisify(execFile)
let tailnet: RealTailnet

beforeAll(async () => {
  tailnet = await startRealTailnet()
}, 900_000)

afterAll(async () => {
  await tailnet?.close()
})

describe("real tailnet fixture", () => {
  it("two real tailscaled peers join real Headscale and reach each other directly, by address and by MagicDNS name", async () => {
    const user = await tailnet.createUser("fixture")
    const key = await tailnet.createAuthKey({ user, reusable: true, ephemeral: true })
    const [ha, hb] = [tailnet.addHost("pa"), tailnet.addHost("pb")]
    const [a, b] = await Promise.all([
      tailnet.startNode("alpha", { host: ha, authKey: key.key }),
      tailnet.startNode("beta", { host: hb, authKey: key.key })
    ])
    const sb = await b.status()
    assert.strictEqual(sb.BackendState, "Running")
    const ipB = sb.Self.TailscaleIPs.find((ip: string) => ip.startsWith("100."))
    assert.match(ipB, /^100\.64\.0\.\d+$/)
    assert.strictEqual(sb.Self.DNSName, `beta.${tailnet.baseDomain}.`)

    const pong = await a.cli(["ping", "--c", "10", "--until-direct", ipB])
    assert.match(pong, new RegExp(`pong from beta .* via ${hb.address}:\\d+`))
    await execFileAsync("ip", ["netns", "exec", ha.netns, "busybox", "ping", "-c", "1", "-W", "3", ipB])
    const { stdout } = await execFileAsync("ip", ["netns", "exec", ha.netns, "busybox", "nslookup", `beta.${tailnet.baseDomain}`, "100.100.100.100"])
    assert.include(stdout, ipB)

    const nodes = await tailnet.nodes()
    assert.deepStrictEqual(nodes.map((n) => n.given_name ?? n.name).sort(), ["alpha", "beta"])
    await Promise.all([a.cli(["logout"]), b.cli(["logout"])])
    assert.deepStrictEqual(await tailnet.nodes(), []) // ephemeral nodes go at logout
  })
})

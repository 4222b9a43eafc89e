import * as fs from "node:fs"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { loginServerFor, MAGIC_DNS_SUFFIX } from "../src/testnet/protocol.ts"
import { startTestnet, type Testnet } from "../src/testnet/server.ts"
import { connectRelay, control, freshTestnet, nodeKey, registerNode, tempStateDir } from "./testnet-helpers.ts"

describe("testnet control protocol", () => {
  let testnet: Testnet
  let dispose: () => Promise<void>

  beforeEach(async () => {
    ;({ dispose, testnet } = await freshTestnet())
  })
  afterEach(() => dispose())

  it("listens on control.sock and relay.sock in the state dir, with a unix: login server", () => {
    expect(testnet.controlSocket).toBe(`${testnet.stateDir}/control.sock`)
    expect(testnet.relaySocket).toBe(`${testnet.stateDir}/relay.sock`)
    expect(testnet.loginServer).toBe(loginServerFor(testnet.controlSocket))
    expect(fs.statSync(testnet.controlSocket).isSocket()).toBe(true)
    expect(testnet.apiUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
    expect(testnet.apiKey).toMatch(/^hskey-api-[A-Za-z0-9]{12}-[A-Za-z0-9]+$/)
  })

  it("a single-use key registers one node, then is refused as used", async () => {
    const authKey = await testnet.createAuthKey()
    expect(authKey).toMatch(/^hskey-auth-[A-Za-z0-9]{12}-[A-Za-z0-9]+$/)
    const first = nodeKey()
    const answer = await control(testnet, "register", { nodeKey: first, authKey, hostname: "alpha" })
    expect(answer.status).toBe(200)
    expect(answer.body.tailnet).toEqual({ name: MAGIC_DNS_SUFFIX, magicDnsSuffix: MAGIC_DNS_SUFFIX })
    expect(answer.body.node).toMatchObject({
      id: 1,
      nodeKey: first,
      name: "alpha",
      givenName: "alpha",
      dnsName: `alpha.${MAGIC_DNS_SUFFIX}.`,
      addresses: ["100.64.0.1", "fd7a:115c:a1e0::1"],
      userId: 1,
      userName: "containerscale",
      tags: [],
      ephemeral: false,
      online: false,
      expired: false,
      lastSeen: null
    })
    const second = await control(testnet, "register", { nodeKey: nodeKey(), authKey, hostname: "beta" })
    expect(second.status).toBe(401)
    expect(second.body.error).toBe("authkey already used")
    expect(testnet.nodes().map((n) => n.name)).toEqual(["alpha"])
  })

  it("a reusable key registers many nodes with consecutive ids and addresses", async () => {
    const authKey = await testnet.createAuthKey({ reusable: true })
    const nodes = []
    for (const hostname of ["a", "b", "c"]) nodes.push((await registerNode(testnet, { authKey, hostname })).node)
    expect(nodes.map((n) => n.id)).toEqual([1, 2, 3])
    expect(nodes.map((n) => n.addresses)).toEqual([
      ["100.64.0.1", "fd7a:115c:a1e0::1"],
      ["100.64.0.2", "fd7a:115c:a1e0::2"],
      ["100.64.0.3", "fd7a:115c:a1e0::3"]
    ])
  })

  it("refuses expired, unknown and missing keys with 401", async () => {
    const expired = await testnet.createAuthKey({ expiresInMs: 0 })
    const tooLate = await control(testnet, "register", { nodeKey: nodeKey(), authKey: expired, hostname: "x" })
    expect(tooLate.status).toBe(401)
    expect(tooLate.body.error).toBe("authkey expired")
    const unknown = await control(testnet, "register", { nodeKey: nodeKey(), authKey: "hskey-auth-AAAAAAAAAAAA-nope", hostname: "x" })
    expect(unknown.status).toBe(401)
    expect(unknown.body.error).toBe("invalid pre auth key")
    const missing = await control(testnet, "register", { nodeKey: nodeKey(), hostname: "x" })
    expect(missing.status).toBe(401)
    expect(missing.body.error).toMatch(/needs an auth key/)
    expect(testnet.nodes()).toEqual([])
  })

  it("rejects bad bodies with 400", async () => {
    const noHostname = await control(testnet, "register", { nodeKey: nodeKey() })
    expect(noHostname.status).toBe(400)
    expect(noHostname.body.error).toMatch(/hostname/)
    expect((await control(testnet, "netmap", "{not json")).status).toBe(400)
    const authKey = await testnet.createAuthKey()
    const badRoute = await control(testnet, "register", { nodeKey: nodeKey(), authKey, hostname: "x", advertiseRoutes: ["10.0.0.0/33"] })
    expect(badRoute.status).toBe(400)
    expect(badRoute.body.error).toMatch(/not a CIDR prefix/)
  })

  it("a known, unexpired node key gets the same node back without a key", async () => {
    const authKey = await testnet.createAuthKey()
    const { node, nodeKey: key } = await registerNode(testnet, { authKey, hostname: "keeper" })
    const again = await control(testnet, "register", { nodeKey: key, hostname: "keeper" })
    expect(again.status).toBe(200)
    expect(again.body.node.id).toBe(node.id)
    expect(again.body.node.addresses).toEqual(node.addresses)
    expect(testnet.nodes()).toHaveLength(1)
  })

  it("an ephemeral key makes ephemeral nodes, deleted on logout", async () => {
    const authKey = await testnet.createAuthKey({ ephemeral: true, reusable: true })
    const { node, nodeKey: key } = await registerNode(testnet, { authKey, hostname: "temp" })
    expect(node.ephemeral).toBe(true)
    expect((await control(testnet, "logout", { nodeKey: key })).status).toBe(200)
    expect(testnet.nodes()).toEqual([])
    expect((await control(testnet, "netmap", { nodeKey: key })).status).toBe(404)
    expect((await control(testnet, "register", { nodeKey: key, hostname: "temp" })).status).toBe(401)
    expect((await control(testnet, "logout", { nodeKey: key })).status).toBe(200)
  })

  it("logout expires a non-ephemeral node; the same node key comes back with a key and keeps its identity", async () => {
    const { node, nodeKey: key } = await registerNode(testnet, { authKey: await testnet.createAuthKey(), hostname: "durable" })
    await registerNode(testnet, { authKey: await testnet.createAuthKey(), hostname: "other" })
    expect((await control(testnet, "logout", { nodeKey: key })).status).toBe(200)
    expect(testnet.nodes().find((n) => n.id === node.id)?.expired).toBe(true)
    const netmap = await control(testnet, "netmap", { nodeKey: key })
    expect(netmap.status).toBe(404)
    expect(netmap.body.error).toMatch(/expired/)
    const withoutKey = await control(testnet, "register", { nodeKey: key, hostname: "durable" })
    expect(withoutKey.status).toBe(401)
    const back = await control(testnet, "register", { nodeKey: key, hostname: "durable", authKey: await testnet.createAuthKey() })
    expect(back.status).toBe(200)
    expect(back.body.node).toMatchObject({ id: node.id, addresses: node.addresses, givenName: "durable", expired: false })
  })

  it("netmap returns self and every other unexpired node", async () => {
    const authKey = await testnet.createAuthKey({ reusable: true })
    const a = await registerNode(testnet, { authKey, hostname: "a" })
    const b = await registerNode(testnet, { authKey, hostname: "b" })
    const c = await registerNode(testnet, { authKey, hostname: "c" })
    await control(testnet, "logout", { nodeKey: c.nodeKey })
    const netmap = await control(testnet, "netmap", { nodeKey: a.nodeKey })
    expect(netmap.status).toBe(200)
    expect(netmap.body.self.id).toBe(a.node.id)
    expect(netmap.body.peers.map((p: { id: number }) => p.id)).toEqual([b.node.id])
    expect(netmap.body.tailnet.magicDnsSuffix).toBe(MAGIC_DNS_SUFFIX)
    expect((await control(testnet, "netmap", { nodeKey: nodeKey() })).status).toBe(404)
  })

  it("makes givenName a unique DNS label", async () => {
    const authKey = await testnet.createAuthKey({ reusable: true })
    const names = []
    for (const hostname of ["Web_Server", "web server", "web-server", "-Ünïcode!-"]) {
      names.push((await registerNode(testnet, { authKey, hostname })).node)
    }
    expect(names.map((n) => n.name)).toEqual(["Web_Server", "web server", "web-server", "-Ünïcode!-"])
    expect(names.map((n) => n.givenName)).toEqual(["web-server", "web-server-1", "web-server-2", "n-code"])
    expect(names[1].dnsName).toBe(`web-server-1.${MAGIC_DNS_SUFFIX}.`)
  })

  it("tags come from the key; update changes hostname and advertised routes", async () => {
    const authKey = await testnet.createAuthKey({ tags: ["tag:router", "tag:a"] })
    const { node, nodeKey: key } = await registerNode(testnet, { authKey, hostname: "router" })
    expect(node.tags).toEqual(["tag:a", "tag:router"])
    expect(node.userName).toBe("tagged-devices")
    expect(node.userDisplayName).toBe("Tagged Devices")
    // a login with a pre-auth key that also asks for tags is refused, as by Headscale 0.28+
    const reusable = await testnet.createAuthKey({ tags: ["tag:router"], reusable: true })
    const asking = await control(testnet, "register", { nodeKey: nodeKey(), authKey: reusable, hostname: "asking", advertiseTags: ["tag:router"] })
    expect(asking.status).toBe(500)
    expect(asking.body.error).toBe("handling register with auth key: creating new node: requested tags [tag:router] are invalid or not permitted")
    const updated = await control(testnet, "update", { nodeKey: key, hostname: "Router-2", advertiseRoutes: ["10.2.0.0/24", "10.1.0.0/24"] })
    expect(updated.status).toBe(200)
    expect(updated.body.node).toMatchObject({ id: node.id, name: "Router-2", givenName: "router-2", advertisedRoutes: ["10.2.0.0/24", "10.1.0.0/24"] })
    expect((await control(testnet, "update", { nodeKey: nodeKey(), hostname: "x" })).status).toBe(404)
    await expect(testnet.createAuthKey({ tags: ["Tag:Bad"] })).rejects.toThrow("tag must start with the string 'tag:'")
    await expect(testnet.createAuthKey({ user: "nobody" })).rejects.toThrow(/no user "nobody"/)
  })
})

describe("testnet state", () => {
  it("persists users, keys and nodes across a restart; nodes come back offline", async () => {
    const dir = tempStateDir()
    let testnet: Testnet | undefined
    try {
      testnet = await startTestnet({ stateDir: dir })
      const authKey = await testnet.createAuthKey({ reusable: true })
      const { node, nodeKey: key } = await registerNode(testnet, { authKey, hostname: "survivor" })
      const relay = await connectRelay(testnet, key)
      expect(testnet.nodes()[0]!.online).toBe(true)
      const apiKey = testnet.apiKey
      expect(fs.statSync(`${dir}/testnet.json`).mode & 0o777).toBe(0o600)
      await testnet.close()
      await relay.closed
      expect(fs.existsSync(testnet.controlSocket)).toBe(false)
      expect(fs.existsSync(testnet.relaySocket)).toBe(false)

      testnet = await startTestnet({ stateDir: dir })
      expect(testnet.apiKey).toBe(apiKey)
      const [restored] = testnet.nodes()
      expect(restored).toMatchObject({ id: node.id, nodeKey: key, addresses: node.addresses, givenName: "survivor", online: false })
      expect(restored!.lastSeen).not.toBeNull()
      const again = await control(testnet, "register", { nodeKey: key, hostname: "survivor" })
      expect(again.body.node.id).toBe(node.id)
      const second = await registerNode(testnet, { authKey, hostname: "newcomer" })
      expect(second.node.id).toBe(2)
    } finally {
      await testnet?.close()
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it("refuses a second server on the same state dir, and a state file that is not one", async () => {
    const { dispose, testnet } = await freshTestnet()
    try {
      await expect(startTestnet({ stateDir: testnet.stateDir })).rejects.toThrow(/already listens/)
    } finally {
      await dispose()
    }
    const dir = tempStateDir()
    try {
      fs.writeFileSync(`${dir}/testnet.json`, "{\"version\":7}")
      await expect(startTestnet({ stateDir: dir })).rejects.toThrow(/not a testnet state file.*remove it/)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})

import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { Testnet } from "../src/testnet/server.ts"
import { api, connectRelay, control, freshTestnet, nodeKey, registerNode, unixRequest } from "./testnet-helpers.ts"

const nodeFieldsInWireOrder = [
  "id",
  "machineKey",
  "nodeKey",
  "discoKey",
  "ipAddresses",
  "name",
  "user",
  "lastSeen",
  "expiry",
  "preAuthKey",
  "createdAt",
  "registerMethod",
  "givenName",
  "online",
  "approvedRoutes",
  "availableRoutes",
  "subnetRoutes",
  "tags"
]
const inAnHour = () => new Date(Date.now() + 3600_000).toISOString()

describe("Headscale API stand-in", () => {
  let testnet: Testnet
  let dispose: () => Promise<void>

  beforeEach(async () => {
    ;({ dispose, testnet } = await freshTestnet())
  })
  afterEach(() => dispose())

  it("wants a Bearer API key on /api, answering 401 Unauthorized in plain text; /health and /version are open", async () => {
    for (const key of [null, "wrong", `${testnet.apiKey}x`, testnet.apiKey.replace(/-[^-]+$/, "-guess")]) {
      const answer = await api(testnet, "GET", "/api/v1/user", undefined, key)
      expect(answer.status).toBe(401)
      expect(answer.text).toBe("Unauthorized")
    }
    expect((await api(testnet, "GET", "/api/v1/nope", undefined, null)).status).toBe(401)
    const health = await api(testnet, "GET", "/health", undefined, null)
    expect(health.body).toEqual({ status: "pass" })
    expect(health.contentType).toBe("application/health+json; charset=utf-8")
    const version = await api(testnet, "GET", "/version", undefined, null)
    expect(version.body.version).toBe("v0.29.2")
    expect(Object.keys(version.body)).toEqual(["version", "commit", "buildTime", "go", "dirty"])
  })

  it("serves the same API on the control socket", async () => {
    const answer = await unixRequest(testnet.controlSocket, "GET", "/api/v1/user", undefined, { authorization: `Bearer ${testnet.apiKey}` })
    expect(answer.status).toBe(200)
    expect(answer.body.users[0].name).toBe("containerscale")
    expect((await unixRequest(testnet.controlSocket, "GET", "/api/v1/user")).text).toBe("Unauthorized")
  })

  it("users: list with filters, create, delete, with ids as strings", async () => {
    const listed = await api(testnet, "GET", "/api/v1/user")
    expect(listed.body.users).toHaveLength(1)
    expect(Object.keys(listed.body.users[0])).toEqual(["id", "name", "createdAt", "displayName", "email", "providerId", "provider", "profilePicUrl"])
    expect(listed.body.users[0]).toMatchObject({ id: "1", name: "containerscale" })
    const created = await api(testnet, "POST", "/api/v1/user", { name: "cni@", displayName: "CNI", email: "cni@example.com" })
    expect(created.status).toBe(200)
    expect(created.body.user).toMatchObject({ id: "2", name: "cni@", displayName: "CNI", email: "cni@example.com" })
    expect((await api(testnet, "GET", "/api/v1/user?name=cni@")).body.users.map((u: { id: string }) => u.id)).toEqual(["2"])
    expect((await api(testnet, "GET", "/api/v1/user?id=1")).body.users.map((u: { name: string }) => u.name)).toEqual(["containerscale"])
    const duplicate = await api(testnet, "POST", "/api/v1/user", { name: "cni@" })
    expect(duplicate.status).toBe(500)
    expect(duplicate.body).toEqual({ code: 13, message: "creating user: creating user: constraint failed: UNIQUE constraint failed: users.name (2067)", details: [] })
    expect((await api(testnet, "POST", "/api/v1/user", { displayName: "no name" })).status).toBe(400)
    expect((await api(testnet, "DELETE", "/api/v1/user/2")).body).toEqual({})
    expect((await api(testnet, "GET", "/api/v1/user")).body.users).toHaveLength(1)
    const missing = await api(testnet, "DELETE", "/api/v1/user/2")
    expect(missing.status).toBe(500)
    expect(missing.body).toEqual({ code: 2, message: "user not found", details: [] })
  })

  it("refuses to delete a user that owns nodes", async () => {
    await registerNode(testnet, { authKey: await testnet.createAuthKey() })
    const answer = await api(testnet, "DELETE", "/api/v1/user/1")
    expect(answer.status).toBe(500)
    expect(answer.body.message).toMatch(/still owns nodes 1; delete them first/)
  })

  it("pre-auth keys: create (key shown once), list masked, expire by id, delete", async () => {
    const created = await api(testnet, "POST", "/api/v1/preauthkey", { user: "1", reusable: false, ephemeral: true, expiration: inAnHour(), aclTags: ["tag:pod"] })
    expect(created.status).toBe(200)
    const key = created.body.preAuthKey
    expect(Object.keys(key)).toEqual(["user", "id", "key", "reusable", "ephemeral", "used", "expiration", "createdAt", "aclTags"])
    expect(key).toMatchObject({ id: "1", reusable: false, ephemeral: true, used: false, aclTags: ["tag:pod"], user: { id: "1", name: "containerscale" } })
    expect(key.key).toMatch(/^hskey-auth-([A-Za-z0-9]{12})-[A-Za-z0-9]+$/)
    const prefix = /^hskey-auth-([A-Za-z0-9]{12})-/.exec(key.key)![1]

    const { node } = await registerNode(testnet, { authKey: key.key, hostname: "pod" })
    expect(node).toMatchObject({ ephemeral: true, tags: ["tag:pod"] })
    const listed = (await api(testnet, "GET", "/api/v1/preauthkey")).body.preAuthKeys
    expect(listed).toHaveLength(1)
    expect(listed[0]).toMatchObject({ id: "1", key: `hskey-auth-${prefix}-***`, used: true })

    const reusable = (await api(testnet, "POST", "/api/v1/preauthkey", { user: 1, reusable: true, expiration: inAnHour() })).body.preAuthKey
    expect(reusable.id).toBe("2")
    expect((await api(testnet, "POST", "/api/v1/preauthkey/expire", { id: "2" })).body).toEqual({})
    const refused = await control(testnet, "register", { nodeKey: nodeKey(), authKey: reusable.key, hostname: "late" })
    expect(refused.status).toBe(401)
    expect(refused.body.error).toBe("authkey expired")
    expect((await api(testnet, "POST", "/api/v1/preauthkey/expire", { id: "99" })).body).toEqual({})

    expect((await api(testnet, "DELETE", "/api/v1/preauthkey?id=2")).body).toEqual({})
    expect((await api(testnet, "GET", "/api/v1/preauthkey")).body.preAuthKeys.map((k: { id: string }) => k.id)).toEqual(["1"])
  })

  it("pre-auth keys: tagged keys need no user; bad tags and bodies are 400, an unknown user 500, no expiration is already expired", async () => {
    const tagged = await api(testnet, "POST", "/api/v1/preauthkey", { aclTags: ["tag:x"], expiration: inAnHour() })
    expect(tagged.status).toBe(200)
    expect(tagged.body.preAuthKey.user).toBeNull()
    for (const body of [{ user: "1", aclTags: ["nottag"], expiration: inAnHour() }, { user: "1", aclTags: ["tag:Upper"] }, { user: "1", aclTags: ["tag:a b"] }]) {
      const answer = await api(testnet, "POST", "/api/v1/preauthkey", body)
      expect(answer.status).toBe(400)
      expect(answer.body.code).toBe(3)
    }
    expect((await api(testnet, "POST", "/api/v1/preauthkey", { reusable: true })).status).toBe(400)
    expect((await api(testnet, "POST", "/api/v1/preauthkey", { user: "abc" })).status).toBe(400)
    expect((await api(testnet, "POST", "/api/v1/preauthkey", { user: "1", expiration: "tomorrow" })).status).toBe(400)
    const notJson = await api(testnet, "POST", "/api/v1/preauthkey", "{")
    expect(notJson.status).toBe(400)
    expect(notJson.body.message).toMatch(/not JSON/)
    const unknownUser = await api(testnet, "POST", "/api/v1/preauthkey", { user: "42", expiration: inAnHour() })
    expect(unknownUser.status).toBe(500)
    expect(unknownUser.body.message).toBe("user not found")
    const snake = await api(testnet, "POST", "/api/v1/preauthkey", { user: "1", acl_tags: ["tag:snake"], expiration: inAnHour() })
    expect(snake.body.preAuthKey.aclTags).toEqual(["tag:snake"])

    const noExpiration = (await api(testnet, "POST", "/api/v1/preauthkey", { user: "1" })).body.preAuthKey
    expect(noExpiration.expiration).toBe("0001-01-01T00:00:00Z")
    expect((await control(testnet, "register", { nodeKey: nodeKey(), authKey: noExpiration.key, hostname: "x" })).status).toBe(401)
  })

  it("nodes: list, get, filter by user, with Headscale's field order and string ids", async () => {
    const authKey = await testnet.createAuthKey({ reusable: true })
    const a = await registerNode(testnet, { authKey, hostname: "alpha" })
    await registerNode(testnet, { authKey: await testnet.createAuthKey({ tags: ["tag:t"] }), hostname: "beta" })
    const relay = await connectRelay(testnet, a.nodeKey)
    try {
      const { nodes } = (await api(testnet, "GET", "/api/v1/node")).body
      expect(nodes).toHaveLength(2)
      expect(Object.keys(nodes[0])).toEqual(nodeFieldsInWireOrder)
      expect(nodes[0]).toMatchObject({
        id: "1",
        nodeKey: a.nodeKey,
        ipAddresses: ["100.64.0.1", "fd7a:115c:a1e0::1"],
        name: "alpha",
        givenName: "alpha",
        user: { id: "1", name: "containerscale" },
        expiry: null,
        registerMethod: "REGISTER_METHOD_AUTH_KEY",
        online: true,
        approvedRoutes: [],
        availableRoutes: [],
        subnetRoutes: [],
        tags: []
      })
      expect(nodes[0].machineKey).toMatch(/^mkey:[0-9a-f]{64}$/)
      expect(nodes[0].discoKey).toMatch(/^discokey:[0-9a-f]{64}$/)
      expect(nodes[0].lastSeen).toMatch(/^\d{4}-\d\d-\d\dT/)
      expect(nodes[0].preAuthKey).toMatchObject({ id: "1", reusable: true, used: true })
      expect(nodes[0].preAuthKey.key).toMatch(/-\*\*\*$/)
      expect(nodes[1]).toMatchObject({ id: "2", online: false, lastSeen: null, tags: ["tag:t"], user: { name: "tagged-devices" } })

      // a tagged node belongs to no user: the filter leaves it out, and a single GET shows no user
      expect((await api(testnet, "GET", "/api/v1/node?user=containerscale")).body.nodes.map((n: { id: string }) => n.id)).toEqual(["1"])
      expect((await api(testnet, "GET", "/api/v1/node/2")).body.node.user).toBeNull()
      expect((await api(testnet, "GET", "/api/v1/node?user=nobody")).body.nodes).toEqual([])
      const single = await api(testnet, "GET", "/api/v1/node/1")
      expect(Object.keys(single.body.node)).toEqual(nodeFieldsInWireOrder)
      expect(single.body.node.id).toBe("1")
      const missing = await api(testnet, "GET", "/api/v1/node/99")
      expect(missing.status).toBe(404)
      expect(missing.body).toEqual({ code: 5, message: "node not found", details: [] })
      expect((await api(testnet, "GET", "/api/v1/node/abc")).status).toBe(400)
    } finally {
      relay.socket.destroy()
    }
  })

  it("approve_routes replaces the approved set; subnetRoutes is advertised ∩ approved in list and approve, empty on get", async () => {
    const { node } = await registerNode(testnet, { authKey: await testnet.createAuthKey(), hostname: "router", advertiseRoutes: ["10.2.0.0/24", "10.1.0.0/24"] })
    const id = String(node.id)
    const approved = await api(testnet, "POST", `/api/v1/node/${id}/approve_routes`, { routes: ["10.9.0.0/24", "10.1.0.0/24"] })
    expect(approved.status).toBe(200)
    expect(approved.body.node).toMatchObject({
      approvedRoutes: ["10.1.0.0/24", "10.9.0.0/24"],
      availableRoutes: ["10.2.0.0/24", "10.1.0.0/24"],
      subnetRoutes: ["10.1.0.0/24"]
    })
    const single = (await api(testnet, "GET", `/api/v1/node/${id}`)).body.node
    expect(single.approvedRoutes).toEqual(["10.1.0.0/24", "10.9.0.0/24"])
    expect(single.subnetRoutes).toEqual([])
    expect((await api(testnet, "GET", "/api/v1/node")).body.nodes[0].subnetRoutes).toEqual(["10.1.0.0/24"])
    expect(testnet.nodes()[0]!.approvedRoutes).toEqual(["10.1.0.0/24", "10.9.0.0/24"])

    await control(testnet, "update", { nodeKey: node.nodeKey, advertiseRoutes: ["0.0.0.0/0", "::/0"] })
    const exit = await api(testnet, "POST", `/api/v1/node/${id}/approve_routes`, { routes: ["::/0"] })
    // exit routes are approved as a pair, and are no subnet routes
    expect(exit.body.node).toMatchObject({ approvedRoutes: ["0.0.0.0/0", "::/0"], availableRoutes: ["0.0.0.0/0", "::/0"], subnetRoutes: [] })
    const none = await api(testnet, "POST", `/api/v1/node/${id}/approve_routes`, { routes: [] })
    expect(none.body.node).toMatchObject({ approvedRoutes: [], subnetRoutes: [] })
    const bad = await api(testnet, "POST", `/api/v1/node/${id}/approve_routes`, { routes: ["bogus"] })
    expect(bad.status).toBe(500)
    expect(bad.body).toEqual({ code: 2, message: `parsing route: netip.ParsePrefix("bogus"): no '/'`, details: [] })
    const missing = await api(testnet, "POST", "/api/v1/node/77/approve_routes", { routes: [] })
    expect(missing.status).toBe(400)
    expect(missing.body).toEqual({ code: 3, message: "node no longer exists in NodeStore: 77", details: [] })
  })

  it("rename, tags, expire and delete a node", async () => {
    const first = await registerNode(testnet, { authKey: await testnet.createAuthKey(), hostname: "first" })
    await registerNode(testnet, { authKey: await testnet.createAuthKey(), hostname: "second" })
    const renamed = await api(testnet, "POST", "/api/v1/node/1/rename/primary")
    expect(renamed.body.node).toMatchObject({ givenName: "primary", name: "first" })
    expect(testnet.nodes()[0]!.dnsName).toBe("primary.tailnet.containerscale.test.")
    expect((await api(testnet, "POST", "/api/v1/node/1/rename/Not_A_Label")).status).toBe(500)
    expect((await api(testnet, "POST", "/api/v1/node/1/rename/second")).body.message).toMatch(/already used/)

    // without a policy no tag exists, so Headscale refuses them all (nodes get tags from their key)
    const tagged = await api(testnet, "POST", "/api/v1/node/1/tags", { tags: ["tag:b", "tag:a"] })
    expect(tagged.status).toBe(400)
    expect(tagged.body).toEqual({ code: 3, message: "requested tags [tag:b tag:a] are invalid or not permitted", details: [] })
    expect((await api(testnet, "POST", "/api/v1/node/1/tags", { tags: [] })).status).toBe(400)
    expect(await api(testnet, "POST", "/api/v1/node/1/tags", { tags: ["bad"] })).toMatchObject({ status: 500, body: { code: 2, message: "tag must start with the string 'tag:'" } })
    expect((await api(testnet, "POST", "/api/v1/node/99/tags", { tags: ["tag:a"] })).status).toBe(404)
    expect(await api(testnet, "POST", "/api/v1/node/99/rename/x")).toMatchObject({ status: 500, body: { code: 2, message: "node no longer exists in NodeStore: 99" } })
    expect(await api(testnet, "POST", "/api/v1/node/99/expire")).toMatchObject({ status: 500, body: { code: 2, message: "node no longer exists in NodeStore: 99" } })

    const expired = await api(testnet, "POST", "/api/v1/node/1/expire")
    expect(expired.body.node.expiry).toMatch(/^\d{4}-/)
    expect((await control(testnet, "netmap", { nodeKey: first.nodeKey })).status).toBe(404)
    expect(testnet.nodes()[0]!.expired).toBe(true)

    expect((await api(testnet, "DELETE", "/api/v1/node/2")).body).toEqual({})
    expect((await api(testnet, "GET", "/api/v1/node/2")).status).toBe(404)
    expect((await api(testnet, "DELETE", "/api/v1/node/2")).status).toBe(404)
    expect(testnet.nodes().map((n) => n.id)).toEqual([1])
  })

  it("API keys: create, list by prefix, expire", async () => {
    const created = await api(testnet, "POST", "/api/v1/apikey", { expiration: inAnHour() })
    const key: string = created.body.apiKey
    expect(key).toMatch(/^hskey-api-[A-Za-z0-9]{12}-/)
    expect((await api(testnet, "GET", "/api/v1/user", undefined, key)).status).toBe(200)
    const { apiKeys } = (await api(testnet, "GET", "/api/v1/apikey")).body
    expect(apiKeys).toHaveLength(2)
    expect(Object.keys(apiKeys[1])).toEqual(["id", "prefix", "expiration", "createdAt", "lastSeen"])
    expect(apiKeys[1]).toMatchObject({ id: "2", prefix: `hskey-api-${key.slice("hskey-api-".length, "hskey-api-".length + 12)}-***` })
    expect(JSON.stringify(apiKeys)).not.toContain(key)
    expect(await api(testnet, "POST", "/api/v1/apikey/expire", { prefix: "nonexistent" })).toMatchObject({ status: 500, body: { code: 2, message: "record not found" } })
    expect((await api(testnet, "POST", "/api/v1/apikey/expire", { prefix: apiKeys[1].prefix })).body).toEqual({})
    expect((await api(testnet, "GET", "/api/v1/user", undefined, key)).status).toBe(401)
    expect((await api(testnet, "GET", "/api/v1/user")).status).toBe(200)
  })

  it("unknown paths are 404 and wrong methods 405, in grpc-gateway's error shape", async () => {
    const unknown = await api(testnet, "GET", "/api/v1/routes")
    expect(unknown.status).toBe(404)
    expect(unknown.body).toEqual({ code: 5, message: "Not Found", details: [] })
    expect((await api(testnet, "PUT", "/api/v1/user")).status).toBe(405)
  })
})

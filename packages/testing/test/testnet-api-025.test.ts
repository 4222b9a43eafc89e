import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { parseArguments, UsageError } from "../src/testnet/cli.ts"
import { startTestnet, type Testnet } from "../src/testnet/server.ts"
import { api, connectRelay, control, ipv4Packet, nodeKey, registerNode, tempStateDir } from "./testnet-helpers.ts"

/** The stand-in imitating Headscale 0.25: no /version, route rows enabled by id, 0.25 node and key shapes. */

const legacyNodeFieldsInWireOrder = [
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
  "forcedTags",
  "invalidTags",
  "validTags",
  "givenName",
  "online"
]
const routeFieldsInWireOrder = ["id", "node", "prefix", "advertised", "enabled", "isPrimary", "createdAt", "updatedAt", "deletedAt"]
const inAnHour = () => new Date(Date.now() + 3600_000).toISOString()

interface Row {
  id: string
  node: { id: string }
  prefix: string
  advertised: boolean
  enabled: boolean
  isPrimary: boolean
}

describe("Headscale 0.25 API stand-in", () => {
  let testnet: Testnet
  let dir: string

  beforeEach(async () => {
    dir = tempStateDir()
    testnet = await startTestnet({ stateDir: dir, headscaleVersion: "0.25" })
  })
  afterEach(async () => {
    await testnet.close()
    fs.rmSync(dir, { recursive: true, force: true })
  })

  const rowsOf = async (nodeId: number | string): Promise<Array<Row>> => {
    const answer = await api(testnet, "GET", `/api/v1/node/${nodeId}/routes`)
    expect(answer.status).toBe(200)
    return answer.body.routes
  }
  const row = (rows: Array<Row>, prefix: string) => rows.find((r) => r.prefix === prefix)!

  it("has no /version (a bare 404) and no /api/v1/health; /health and the auth rules stay", async () => {
    expect(testnet.headscaleVersion).toBe("0.25")
    const version = await api(testnet, "GET", "/version", undefined, null)
    expect(version.status).toBe(404)
    expect(version.text).toBe("")
    expect((await api(testnet, "GET", "/health", undefined, null)).body).toEqual({ status: "pass" })
    expect((await api(testnet, "GET", "/api/v1/health")).status).toBe(404)
    // 0.25 answers a key it cannot validate with 500, and only a missing one with 401
    const unauthorized = await api(testnet, "GET", "/api/v1/routes", undefined, "wrong")
    expect(unauthorized.status).toBe(500)
    expect(unauthorized.text).toBe("Unauthorized")
    expect((await api(testnet, "GET", "/api/v1/routes", undefined, null)).status).toBe(401)
    expect((await api(testnet, "GET", "/api/v1/routes")).body).toEqual({ routes: [] })
  })

  it("nodes have 0.25's fields: forced/valid/invalid tags, no route fields, the real owner", async () => {
    const a = await registerNode(testnet, { authKey: await testnet.createAuthKey({ tags: ["tag:pod"] }), hostname: "alpha", advertiseRoutes: ["10.1.0.0/24"] })
    const { nodes } = (await api(testnet, "GET", "/api/v1/node")).body
    expect(nodes).toHaveLength(1)
    expect(Object.keys(nodes[0])).toEqual(legacyNodeFieldsInWireOrder)
    expect(nodes[0]).toMatchObject({
      id: String(a.node.id),
      nodeKey: a.nodeKey,
      name: "alpha",
      forcedTags: ["tag:pod"],
      validTags: ["tag:pod"],
      invalidTags: [],
      user: { id: "1", name: "containerscale" }
    })
    expect(nodes[0].preAuthKey.user).toBe("containerscale")
    const single = (await api(testnet, "GET", `/api/v1/node/${a.node.id}`)).body.node
    expect(Object.keys(single)).toEqual(legacyNodeFieldsInWireOrder)
    const tagged = (await api(testnet, "POST", `/api/v1/node/${a.node.id}/tags`, { tags: ["tag:x"] })).body.node
    expect(tagged.forcedTags).toEqual(["tag:x"])
  })

  it("a missing node or route is gorm's plain error: 500 record not found", async () => {
    for (const [method, urlPath] of [
      ["GET", "/api/v1/node/9"],
      ["DELETE", "/api/v1/node/9"],
      ["GET", "/api/v1/node/9/routes"],
      ["POST", "/api/v1/routes/9/enable"],
      ["POST", "/api/v1/routes/9/disable"],
      ["DELETE", "/api/v1/routes/9"]
    ] as const) {
      const answer = await api(testnet, method, urlPath)
      expect(answer.status, `${method} ${urlPath}`).toBe(500)
      expect(answer.body).toEqual({ code: 2, message: "record not found", details: [] })
    }
  })

  it("there is no approve_routes; route rows appear when a node advertises, on register and on update", async () => {
    const a = await registerNode(testnet, { authKey: await testnet.createAuthKey({ reusable: true }), hostname: "router", advertiseRoutes: ["10.2.0.0/24", "10.1.0.0/24"] })
    const approve = await api(testnet, "POST", `/api/v1/node/${a.node.id}/approve_routes`, { routes: ["10.1.0.0/24"] })
    expect(approve.status).toBe(404)
    expect(approve.body).toEqual({ code: 5, message: "Not Found", details: [] })

    const { routes } = (await api(testnet, "GET", "/api/v1/routes")).body
    expect(routes).toHaveLength(2)
    expect(Object.keys(routes[0])).toEqual(routeFieldsInWireOrder)
    // rows come in the order the node advertised the prefixes
    expect(routes[0]).toMatchObject({ id: "1", prefix: "10.2.0.0/24", advertised: true, enabled: false, isPrimary: false, deletedAt: null })
    expect(routes[1]).toMatchObject({ id: "2", prefix: "10.1.0.0/24" })
    expect(Object.keys(routes[0].node)).toEqual(legacyNodeFieldsInWireOrder)
    expect(routes[0].node.id).toBe(String(a.node.id))
    expect(routes[0].createdAt).toMatch(/^\d{4}-\d\d-\d\dT/)

    expect((await control(testnet, "update", { nodeKey: a.nodeKey, advertiseRoutes: ["10.1.0.0/24", "10.3.0.0/24"] })).status).toBe(200)
    const rows = await rowsOf(a.node.id)
    expect(rows.map((r) => [r.id, r.prefix, r.advertised])).toEqual([
      ["1", "10.2.0.0/24", false],
      ["2", "10.1.0.0/24", true],
      ["3", "10.3.0.0/24", true]
    ])
    const b = await registerNode(testnet, { authKey: await testnet.createAuthKey(), hostname: "other", advertiseRoutes: ["10.1.0.0/24"] })
    expect((await rowsOf(b.node.id)).map((r) => [r.id, r.prefix])).toEqual([["4", "10.1.0.0/24"]])
    expect((await rowsOf(a.node.id)).map((r) => r.id)).toEqual(["1", "2", "3"])
  })

  it("enable and disable by route id act on the node's approved set, and the relay follows", async () => {
    const authKey = await testnet.createAuthKey({ reusable: true })
    const client = await registerNode(testnet, { authKey, hostname: "client" })
    const router = await registerNode(testnet, { authKey, hostname: "router", advertiseRoutes: ["10.5.0.0/24"] })
    const other = await registerNode(testnet, { authKey, hostname: "other", advertiseRoutes: ["10.5.0.0/24"] })
    const relayClient = await connectRelay(testnet, client.nodeKey)
    const relayRouter = await connectRelay(testnet, router.nodeKey)
    const relayOther = await connectRelay(testnet, other.nodeKey)
    try {
      const id = row(await rowsOf(router.node.id), "10.5.0.0/24").id
      const toPod = ipv4Packet("100.64.0.1", "10.5.0.7", "to a pod")
      relayClient.send(toPod)
      expect(await relayRouter.receivesWithin(100)).toBe(false)

      expect((await api(testnet, "POST", `/api/v1/routes/${id}/enable`)).body).toEqual({})
      expect(row(await rowsOf(router.node.id), "10.5.0.0/24")).toMatchObject({ enabled: true, advertised: true, isPrimary: true })
      expect(row(await rowsOf(other.node.id), "10.5.0.0/24")).toMatchObject({ enabled: false, isPrimary: false })
      expect(testnet.nodes().find((n) => n.id === router.node.id)!.approvedRoutes).toEqual(["10.5.0.0/24"])
      expect(testnet.nodes().find((n) => n.id === other.node.id)!.approvedRoutes).toEqual([])
      relayClient.send(toPod)
      expect(await relayRouter.next()).toEqual(toPod)
      expect(await relayOther.receivesWithin(50)).toBe(false)

      expect((await api(testnet, "POST", `/api/v1/routes/${id}/enable`)).status).toBe(200)
      expect((await api(testnet, "POST", `/api/v1/routes/${id}/disable`)).body).toEqual({})
      expect(row(await rowsOf(router.node.id), "10.5.0.0/24").enabled).toBe(false)
      relayClient.send(toPod)
      expect(await relayRouter.receivesWithin(100)).toBe(false)
    } finally {
      for (const relay of [relayClient, relayRouter, relayOther]) relay.socket.destroy()
    }
  })

  it("a prefix no longer advertised loses its approval and cannot be enabled; enabling one exit route enables both", async () => {
    const r = await registerNode(testnet, { authKey: await testnet.createAuthKey(), hostname: "exit", advertiseRoutes: ["10.7.0.0/24", "0.0.0.0/0", "::/0"] })
    const rows = await rowsOf(r.node.id)
    await api(testnet, "POST", `/api/v1/routes/${row(rows, "10.7.0.0/24").id}/enable`)
    await api(testnet, "POST", `/api/v1/routes/${row(rows, "::/0").id}/enable`)
    const enabled = await rowsOf(r.node.id)
    expect(enabled.map((x) => [x.prefix, x.enabled, x.isPrimary])).toEqual([
      ["10.7.0.0/24", true, true],
      ["0.0.0.0/0", true, false],
      ["::/0", true, false]
    ])

    await control(testnet, "update", { nodeKey: r.nodeKey, advertiseRoutes: ["0.0.0.0/0", "::/0"] })
    expect(row(await rowsOf(r.node.id), "10.7.0.0/24")).toMatchObject({ advertised: false, enabled: false })
    expect(testnet.nodes()[0]!.approvedRoutes).toEqual(["0.0.0.0/0", "::/0"])
    const refused = await api(testnet, "POST", `/api/v1/routes/${row(rows, "10.7.0.0/24").id}/enable`)
    expect(refused.status).toBe(500)
    expect(refused.body.message).toMatch(/route \(10\.7\.0\.0\/24\) is not available on node exit/)

    // advertised again: the same row, still disabled until enabled
    await control(testnet, "update", { nodeKey: r.nodeKey, advertiseRoutes: ["10.7.0.0/24"] })
    expect(row(await rowsOf(r.node.id), "10.7.0.0/24")).toMatchObject({ id: row(rows, "10.7.0.0/24").id, advertised: true, enabled: false })
  })

  it("deleting a row drops it and its approval; the next update advertising it makes a new row", async () => {
    const r = await registerNode(testnet, { authKey: await testnet.createAuthKey(), hostname: "r", advertiseRoutes: ["10.8.0.0/24"] })
    const id = (await rowsOf(r.node.id))[0]!.id
    await api(testnet, "POST", `/api/v1/routes/${id}/enable`)
    expect((await api(testnet, "DELETE", `/api/v1/routes/${id}`)).body).toEqual({})
    expect(await rowsOf(r.node.id)).toEqual([])
    expect(testnet.nodes()[0]!.approvedRoutes).toEqual([])
    await control(testnet, "update", { nodeKey: r.nodeKey, advertiseRoutes: ["10.8.0.0/24"] })
    const again = await rowsOf(r.node.id)
    expect(again.map((x) => [x.prefix, x.enabled])).toEqual([["10.8.0.0/24", false]])
    expect(again[0]!.id).not.toBe(id)
    await api(testnet, "DELETE", `/api/v1/node/${r.node.id}`)
    expect((await api(testnet, "GET", "/api/v1/routes")).body.routes).toEqual([])
  })

  it("pre-auth keys name the user: create, list with ?user=, expire with {user, key}; no DELETE", async () => {
    const created = await api(testnet, "POST", "/api/v1/preauthkey", { user: "containerscale", reusable: true, ephemeral: true, expiration: inAnHour(), aclTags: ["tag:pod"] })
    expect(created.status).toBe(200)
    const key = created.body.preAuthKey
    expect(Object.keys(key)).toEqual(["user", "id", "key", "reusable", "ephemeral", "used", "expiration", "createdAt", "aclTags"])
    expect(key).toMatchObject({ user: "containerscale", id: "1", reusable: true, ephemeral: true, used: false, aclTags: ["tag:pod"] })
    const { node } = await registerNode(testnet, { authKey: key.key, hostname: "pod" })
    expect(node).toMatchObject({ ephemeral: true, tags: ["tag:pod"] })

    for (const body of [{ user: "1", expiration: inAnHour() }, { aclTags: ["tag:x"], expiration: inAnHour() }]) {
      const refused = await api(testnet, "POST", "/api/v1/preauthkey", body)
      expect(refused.status).toBe(500)
      expect(refused.body.message).toBe("user not found")
    }
    expect((await api(testnet, "POST", "/api/v1/preauthkey", { user: "containerscale", aclTags: ["bad"], expiration: inAnHour() })).status).toBe(400)

    expect((await api(testnet, "GET", "/api/v1/preauthkey")).status).toBe(500)
    const listed = (await api(testnet, "GET", "/api/v1/preauthkey?user=containerscale")).body.preAuthKeys
    expect(listed.map((k: { id: string; key: string; used: boolean }) => [k.id, k.key, k.used])).toEqual([["1", key.key, true]])

    expect((await api(testnet, "POST", "/api/v1/preauthkey/expire", { user: "containerscale", key: key.key })).body).toEqual({})
    const late = await control(testnet, "register", { nodeKey: nodeKey(), authKey: key.key, hostname: "late" })
    expect(late.status).toBe(401)
    expect((await api(testnet, "POST", "/api/v1/preauthkey/expire", { user: "containerscale", key: "nope" })).status).toBe(500)
    expect((await api(testnet, "POST", "/api/v1/preauthkey/expire", { id: "1" })).status).toBe(500)
    expect((await api(testnet, "DELETE", "/api/v1/preauthkey?id=1")).status).toBe(405)
  })

  it("the tailnet survives a restart as 0.29, where the same approvals show as approvedRoutes", async () => {
    const r = await registerNode(testnet, { authKey: await testnet.createAuthKey(), hostname: "r", advertiseRoutes: ["10.9.0.0/24"] })
    await api(testnet, "POST", `/api/v1/routes/${(await rowsOf(r.node.id))[0]!.id}/enable`)
    await testnet.close()
    testnet = await startTestnet({ stateDir: dir })
    expect(testnet.headscaleVersion).toBe("0.29")
    const node = (await api(testnet, "GET", "/api/v1/node")).body.nodes[0]
    expect(node).toMatchObject({ approvedRoutes: ["10.9.0.0/24"], availableRoutes: ["10.9.0.0/24"], subnetRoutes: ["10.9.0.0/24"] })
    expect((await api(testnet, "GET", "/api/v1/routes")).status).toBe(404)
  })
})

describe("containerscale-testnet --headscale-version", () => {
  it("parses 0.29 and 0.25 for up and serve, and refuses other values and down", () => {
    expect(parseArguments(["up", "--state", "/tmp/x", "--headscale-version", "0.25"]).headscaleVersion).toBe("0.25")
    expect(parseArguments(["serve", "--state", "/tmp/x", "--headscale-version=0.29"]).headscaleVersion).toBe("0.29")
    expect(parseArguments(["up", "--state", "/tmp/x"]).headscaleVersion).toBeUndefined()
    expect(() => parseArguments(["up", "--state", "/tmp/x", "--headscale-version", "0.26"])).toThrow(UsageError)
    expect(() => parseArguments(["down", "--state", "/tmp/x", "--headscale-version", "0.25"])).toThrow(UsageError)
  })

  it("startTestnet refuses an unknown version", async () => {
    const dir = tempStateDir()
    try {
      await expect(startTestnet({ stateDir: dir, headscaleVersion: "0.27" as never })).rejects.toThrow(/headscaleVersion must be one of 0\.29, 0\.25/)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it("up --headscale-version 0.25 starts a 0.25 server and hands out a key made the 0.25 way; up asking 0.29 of it is refused", () => {
    const mainTs = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../src/testnet/main.ts")
    const run = (...args: Array<string>) => spawnSync(process.execPath, [mainTs, ...args], { encoding: "utf8", timeout: 30_000 })
    const dir = tempStateDir()
    try {
      const up = run("up", "--state", dir, "--headscale-version", "0.25")
      expect(up.status, up.stderr).toBe(0)
      const info = JSON.parse(up.stdout)
      expect(info.authKey).toMatch(/^hskey-auth-/)
      expect(fs.readFileSync(path.join(dir, "testnet.log"), "utf8")).toMatch(/Headscale 0\.25 API/)
      const again = run("up", "--state", dir)
      expect(again.status, again.stderr).toBe(0)
      const other = run("up", "--state", dir, "--headscale-version", "0.29")
      expect(other.status).toBe(1)
      expect(other.stderr).toMatch(/already runs with --headscale-version 0\.25; stop it first/)
    } finally {
      run("down", "--state", dir)
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})

import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { Testnet } from "../src/testnet/server.ts"
import {
  api,
  connectRelay,
  control,
  eventually,
  frame,
  freshTestnet,
  ipv4Packet,
  ipv6Packet,
  nodeKey,
  registerNode,
  type RelayClient
} from "./testnet-helpers.ts"

describe("testnet relay", () => {
  let testnet: Testnet
  let dispose: () => Promise<void>
  const clients: Array<RelayClient> = []

  const connect = async (key: string) => {
    const client = await connectRelay(testnet, key)
    clients.push(client)
    return client
  }

  beforeEach(async () => {
    ;({ dispose, testnet } = await freshTestnet())
  })
  afterEach(async () => {
    for (const client of clients.splice(0)) client.socket.destroy()
    await dispose()
  })

  const twoNodes = async () => {
    const authKey = await testnet.createAuthKey({ reusable: true })
    const a = await registerNode(testnet, { authKey, hostname: "a" })
    const b = await registerNode(testnet, { authKey, hostname: "b" })
    return { a, b, relayA: await connect(a.nodeKey), relayB: await connect(b.nodeKey) }
  }

  it("forwards IPv4 and IPv6 packets to the node owning the destination, both ways", async () => {
    const { relayA, relayB } = await twoNodes()
    const v4 = ipv4Packet("100.64.0.1", "100.64.0.2", "hello over v4")
    relayA.send(v4)
    expect(await relayB.next()).toEqual(v4)
    const reply = ipv4Packet("100.64.0.2", "100.64.0.1", "and back")
    relayB.send(reply)
    expect(await relayA.next()).toEqual(reply)
    const v6 = ipv6Packet("fd7a:115c:a1e0:0:0:0:0:1", "fd7a:115c:a1e0:0:0:0:0:2", "hello over v6")
    relayA.send(v6)
    expect(await relayB.next()).toEqual(v6)
    expect(await relayA.receivesWithin(50)).toBe(false)
  })

  it("reassembles frames split into single bytes and splits frames merged into one write", async () => {
    const { relayA, relayB } = await twoNodes()
    const packets = ["one", "two", "three"].map((text) => ipv4Packet("100.64.0.1", "100.64.0.2", text))
    const merged = Buffer.concat(packets.map(frame))
    for (const byte of merged.subarray(0, 30)) {
      relayA.socket.write(Buffer.of(byte))
      await new Promise((resolve) => setImmediate(resolve))
    }
    relayA.socket.write(merged.subarray(30))
    for (const packet of packets) expect(await relayB.next()).toEqual(packet)
  })

  it("accepts frames sent in the same write as the hello line", async () => {
    const authKey = await testnet.createAuthKey({ reusable: true })
    const a = await registerNode(testnet, { authKey, hostname: "a" })
    const b = await registerNode(testnet, { authKey, hostname: "b" })
    const relayB = await connect(b.nodeKey)
    const packet = ipv4Packet("100.64.0.1", "100.64.0.2", "eager")
    const socket = net.connect(testnet.relaySocket)
    try {
      socket.on("connect", () => socket.write(Buffer.concat([Buffer.from(`${JSON.stringify({ nodeKey: a.nodeKey })}\n`), frame(packet)])))
      expect(await relayB.next()).toEqual(packet)
    } finally {
      socket.destroy()
    }
  })

  it("drops packets for addresses nobody owns or for offline nodes, and keeps going", async () => {
    const authKey = await testnet.createAuthKey({ reusable: true })
    const a = await registerNode(testnet, { authKey, hostname: "a" })
    const b = await registerNode(testnet, { authKey, hostname: "b" })
    await registerNode(testnet, { authKey, hostname: "c-offline" })
    const relayA = await connect(a.nodeKey)
    const relayB = await connect(b.nodeKey)
    relayA.send(ipv4Packet("100.64.0.1", "100.64.0.3", "to offline c"))
    relayA.send(ipv4Packet("100.64.0.1", "192.0.2.1", "to nowhere"))
    relayA.send(Buffer.from([0x00, 0x01, 0x02]))
    const delivered = ipv4Packet("100.64.0.1", "100.64.0.2", "still works")
    relayA.send(delivered)
    expect(await relayB.next()).toEqual(delivered)
    expect(await relayB.receivesWithin(50)).toBe(false)
  })

  it("routes packets for an approved, advertised subnet to its router", async () => {
    const authKey = await testnet.createAuthKey({ reusable: true })
    const a = await registerNode(testnet, { authKey, hostname: "a" })
    const router = await registerNode(testnet, { authKey, hostname: "router", advertiseRoutes: ["10.5.0.0/24"] })
    const relayA = await connect(a.nodeKey)
    const relayRouter = await connect(router.nodeKey)
    const toPod = ipv4Packet("100.64.0.1", "10.5.0.7", "to a pod")
    relayA.send(toPod)
    expect(await relayRouter.receivesWithin(100)).toBe(false)
    await api(testnet, "POST", `/api/v1/node/${router.node.id}/approve_routes`, { routes: ["10.5.0.0/24"] })
    relayA.send(toPod)
    expect(await relayRouter.next()).toEqual(toPod)
  })

  it("marks nodes online while connected and records lastSeen", async () => {
    const { a, relayA } = await twoNodes()
    const nodeA = () => testnet.nodes().find((n) => n.nodeKey === a.nodeKey)!
    expect(nodeA().online).toBe(true)
    expect(nodeA().lastSeen).not.toBeNull()
    relayA.socket.destroy()
    await eventually(() => !nodeA().online)
    expect((await api(testnet, "GET", "/api/v1/node/1")).body.node.online).toBe(false)
  })

  it("refuses unknown node keys and a bad hello line", async () => {
    await expect(connectRelay(testnet, nodeKey())).rejects.toThrow(/not registered/)
    const socket = net.connect(testnet.relaySocket)
    try {
      const reply = await new Promise<string>((resolve) => {
        socket.on("connect", () => socket.write("hello\n"))
        socket.on("data", (chunk: Buffer) => resolve(chunk.toString("utf8")))
      })
      expect(JSON.parse(reply).error).toMatch(/nodeKey/)
    } finally {
      socket.destroy()
    }
  })

  it("cuts a node off when the API deletes or expires it, or it logs out", async () => {
    const { a, b, relayA, relayB } = await twoNodes()
    expect((await api(testnet, "DELETE", `/api/v1/node/${a.node.id}`)).status).toBe(200)
    await relayA.closed
    await expect(connectRelay(testnet, a.nodeKey)).rejects.toThrow(/not registered/)
    expect((await api(testnet, "POST", `/api/v1/node/${b.node.id}/expire`)).status).toBe(200)
    await relayB.closed
    await expect(connectRelay(testnet, b.nodeKey)).rejects.toThrow(/expired/)

    const c = await registerNode(testnet, { authKey: await testnet.createAuthKey(), hostname: "c" })
    const relayC = await connect(c.nodeKey)
    expect((await control(testnet, "logout", { nodeKey: c.nodeKey })).status).toBe(200)
    await relayC.closed
  })

  it("a second connection for the same node replaces the first", async () => {
    const { a, relayA: first, relayB } = await twoNodes()
    const second = await connect(a.nodeKey)
    await first.closed
    const packet = ipv4Packet("100.64.0.2", "100.64.0.1", "to the new one")
    relayB.send(packet)
    expect(await second.next()).toEqual(packet)
    expect(testnet.nodes().find((n) => n.nodeKey === a.nodeKey)!.online).toBe(true)
  })
})

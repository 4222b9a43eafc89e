import * as net from "node:net"
import { Schema } from "effect"
import { destinationOf } from "./addresses.ts"
import { encodeFrame, FrameReader, LineReader } from "./frames.ts"
import type { TestnetState } from "./state.ts"

const Hello = Schema.Struct({ nodeKey: Schema.String })
const decodeHello = Schema.decodeUnknownOption(Schema.fromJsonString(Hello))

/** Packets queue up to this much for a slow reader; beyond it they are dropped, as a congested link would. */
const maxQueuedBytes = 4 << 20

interface Connection {
  readonly socket: net.Socket
  readonly nodeId: number
}

/** The packet relay on `relay.sock` (see protocol.ts): routes each packet to the node owning its destination. */
export class Relay {
  private readonly byNodeKey = new Map<string, Connection>()
  private readonly byNodeId = new Map<number, Connection>()
  private readonly sockets = new Set<net.Socket>()
  readonly server: net.Server

  private readonly state: TestnetState

  constructor(state: TestnetState) {
    this.state = state
    this.server = net.createServer((socket) => this.accept(socket))
  }

  private accept(socket: net.Socket) {
    this.sockets.add(socket)
    socket.on("close", () => this.sockets.delete(socket))
    socket.on("error", () => socket.destroy())
    const hello = new LineReader()
    const onHello = (chunk: Buffer) => {
      let read: ReturnType<LineReader["push"]>
      try {
        read = hello.push(chunk)
      } catch {
        return this.refuse(socket, "the relay expects one line of JSON, {\"nodeKey\":\"nodekey:...\"}, first")
      }
      if (read === undefined) return
      socket.off("data", onHello)
      const request = decodeHello(read.line)
      if (request._tag === "None") return this.refuse(socket, "the first line must be JSON {\"nodeKey\":\"nodekey:...\"}")
      const node = this.state.nodeByKey(request.value.nodeKey)
      if (node === undefined) return this.refuse(socket, `node key ${request.value.nodeKey} is not registered on this tailnet`)
      if (this.state.isExpired(node)) return this.refuse(socket, `the node of ${request.value.nodeKey} expired; log in again`)
      this.attach(socket, node.id, node.nodeKey, read.rest)
    }
    socket.on("data", onHello)
  }

  private refuse(socket: net.Socket, error: string) {
    socket.end(`${JSON.stringify({ error })}\n`)
  }

  private attach(socket: net.Socket, nodeId: number, nodeKey: string, rest: Buffer) {
    this.byNodeKey.get(nodeKey)?.socket.destroy()
    const connection = { socket, nodeId }
    this.byNodeKey.set(nodeKey, connection)
    this.byNodeId.set(nodeId, connection)
    this.state.setOnline(nodeId, true)
    socket.on("close", () => {
      if (this.byNodeKey.get(nodeKey) !== connection) return
      this.byNodeKey.delete(nodeKey)
      this.byNodeId.delete(nodeId)
      this.state.setOnline(nodeId, false)
    })
    socket.write(`${JSON.stringify({ ok: true })}\n`)
    const frames = new FrameReader()
    const onData = (chunk: Buffer) => {
      let packets: Array<Buffer>
      try {
        packets = frames.push(chunk)
      } catch {
        socket.destroy()
        return
      }
      for (const packet of packets) this.forward(packet)
    }
    socket.on("data", onData)
    if (rest.length > 0) onData(rest)
  }

  private forward(packet: Buffer) {
    const destination = destinationOf(packet)
    if (destination === undefined) return
    const node = this.state.destinationNode(destination)
    const target = node === undefined ? undefined : this.byNodeId.get(node.id)
    if (target === undefined || target.socket.writableLength > maxQueuedBytes) return
    target.socket.write(encodeFrame(packet))
  }

  /** Cuts a node off, e.g. after it was deleted or expired. */
  disconnect(nodeKey: string): void {
    this.byNodeKey.get(nodeKey)?.socket.destroy()
  }

  /** Resolves once every connection closed (and its node went offline) and the server stopped. */
  async close(): Promise<void> {
    // this.sockets holds only sockets that have not emitted "close" yet
    const closing = [...this.sockets].map((socket) => new Promise<void>((resolve) => socket.once("close", () => resolve())))
    for (const socket of this.sockets) socket.destroy()
    await Promise.all(closing)
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }
}

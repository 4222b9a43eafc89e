import * as net from "node:net"

/**
 * One node's connection to the testnet relay (see `testnet/protocol.ts`): a JSON handshake line,
 * then frames of a 4-byte big-endian length and one IP packet, both ways.
 */
export class RelayLink {
  private socket: net.Socket | undefined
  private closed = false

  private constructor(private readonly onPacket: (packet: Buffer) => void, private readonly onClose: (reason: string) => void) {}

  /** Connects and completes the handshake; rejects with the relay's error otherwise. */
  static connect(socketPath: string, nodeKey: string, onPacket: (packet: Buffer) => void, onClose: (reason: string) => void): Promise<RelayLink> {
    const link = new RelayLink(onPacket, onClose)
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(socketPath)
      let buffered: Buffer = Buffer.alloc(0)
      let handshaken = false
      const fail = (message: string) => {
        socket.destroy()
        reject(new Error(`relay ${socketPath}: ${message}`))
      }
      socket.setNoDelay?.(true)
      socket.on("connect", () => socket.write(`${JSON.stringify({ nodeKey })}\n`))
      socket.on("data", (chunk: Buffer) => {
        buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk])
        if (!handshaken) {
          const nl = buffered.indexOf(0x0a)
          if (nl < 0) return
          const line = buffered.subarray(0, nl).toString("utf8")
          buffered = buffered.subarray(nl + 1)
          let answer: { ok?: boolean; error?: string }
          try {
            answer = JSON.parse(line) as typeof answer
          } catch {
            return fail(`bad handshake answer ${JSON.stringify(line)}`)
          }
          if (answer.ok !== true) return fail(answer.error ?? `handshake refused: ${line}`)
          handshaken = true
          link.socket = socket
          resolve(link)
        }
        while (buffered.length >= 4) {
          const length = buffered.readUInt32BE(0)
          if (buffered.length < 4 + length) break
          link.onPacket(buffered.subarray(4, 4 + length))
          buffered = buffered.subarray(4 + length)
        }
      })
      socket.on("error", (e) => (handshaken ? undefined : fail(e.message)))
      socket.on("close", () => {
        if (!handshaken) return fail("connection closed during the handshake")
        if (!link.closed) {
          link.closed = true
          link.onClose("relay connection closed")
        }
      })
    })
  }

  send(packet: Uint8Array): void {
    if (this.closed || this.socket === undefined) return
    const frame = Buffer.allocUnsafe(4 + packet.length)
    frame.writeUInt32BE(packet.length, 0)
    frame.set(packet, 4)
    this.socket.write(frame)
  }

  close(): void {
    this.closed = true
    this.socket?.destroy()
  }
}

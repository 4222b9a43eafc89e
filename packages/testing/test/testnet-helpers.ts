import * as fs from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { startTestnet, type Testnet } from "../src/testnet/server.ts"

export const tempStateDir = (): string => fs.mkdtempSync(path.join(os.tmpdir(), "cstestnet-"))

/** A testnet in a fresh temp dir; `dispose` closes it and removes the dir. */
export const freshTestnet = async (): Promise<{ testnet: Testnet; dispose: () => Promise<void> }> => {
  const dir = tempStateDir()
  try {
    const testnet = await startTestnet({ stateDir: dir })
    return {
      testnet,
      dispose: async () => {
        await testnet.close()
        fs.rmSync(dir, { recursive: true, force: true })
      }
    }
  } catch (error) {
    fs.rmSync(dir, { recursive: true, force: true })
    throw error
  }
}

export interface Answer {
  readonly status: number
  readonly text: string
  readonly body: any
  readonly contentType?: string | null
}

const answerOf = (status: number, text: string, contentType?: string | null): Answer => {
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    body = undefined
  }
  return contentType === undefined ? { status, text, body } : { status, text, body, contentType }
}

/** An HTTP request over a unix socket. */
export const unixRequest = (socketPath: string, method: string, urlPath: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> =>
  new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body)
    const request = http.request({ socketPath, method, path: urlPath, headers, agent: false }, (response) => {
      const chunks: Array<Buffer> = []
      response.on("data", (chunk: Buffer) => chunks.push(chunk))
      response.on("end", () => resolve(answerOf(response.statusCode ?? 0, Buffer.concat(chunks).toString("utf8"))))
    })
    request.on("error", reject)
    request.end(payload)
  })

/** `POST /ts/<call>` on the control socket, as the stand-in tailscaled does. */
export const control = (testnet: Testnet, call: "register" | "logout" | "netmap" | "update", body: unknown): Promise<Answer> =>
  unixRequest(testnet.controlSocket, "POST", `/ts/${call}`, body)

/** The Headscale API on TCP, with the testnet's API key unless `key` says otherwise (null: no header). */
export const api = async (testnet: Testnet, method: string, urlPath: string, body?: unknown, key: string | null = testnet.apiKey): Promise<Answer> => {
  const response = await fetch(`${testnet.apiUrl}${urlPath}`, {
    method,
    headers: key === null ? {} : { authorization: `Bearer ${key}` },
    ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) })
  })
  return answerOf(response.status, await response.text(), response.headers.get("content-type"))
}

let keyCounter = 0
/** A node key shaped like tailscaled's (`nodekey:` and 64 hex digits), unique per call. */
export const nodeKey = (): string => `nodekey:${(++keyCounter).toString(16).padStart(8, "0")}${"ab".repeat(28)}`

export const registerNode = async (testnet: Testnet, options: { hostname?: string; authKey?: string; nodeKey?: string; advertiseRoutes?: Array<string> } = {}) => {
  const key = options.nodeKey ?? nodeKey()
  const answer = await control(testnet, "register", {
    nodeKey: key,
    hostname: options.hostname ?? "node",
    ...(options.authKey === undefined ? {} : { authKey: options.authKey }),
    ...(options.advertiseRoutes === undefined ? {} : { advertiseRoutes: options.advertiseRoutes })
  })
  if (answer.status !== 200) throw new Error(`register failed: ${answer.status} ${answer.text}`)
  return { nodeKey: key, node: answer.body.node }
}

const ipv4Bytes = (address: string) => address.split(".").map(Number)
/** Full-form IPv6 only (eight groups, no "::"), to stay independent of the code under test. */
const ipv6Bytes = (address: string) => address.split(":").flatMap((group) => [parseInt(group, 16) >> 8, parseInt(group, 16) & 0xff])

const udp = (payload: Buffer) => {
  const header = Buffer.alloc(8)
  header.writeUInt16BE(40000, 0)
  header.writeUInt16BE(9, 2)
  header.writeUInt16BE(8 + payload.length, 4)
  return Buffer.concat([header, payload])
}

/** A UDP-in-IPv4 packet with a valid header checksum. */
export const ipv4Packet = (source: string, destination: string, payload: string): Buffer => {
  const body = udp(Buffer.from(payload))
  const header = Buffer.alloc(20)
  header[0] = 0x45
  header.writeUInt16BE(20 + body.length, 2)
  header.writeUInt16BE(0x4000, 6)
  header[8] = 64
  header[9] = 17
  header.set(ipv4Bytes(source), 12)
  header.set(ipv4Bytes(destination), 16)
  let sum = 0
  for (let i = 0; i < 20; i += 2) sum += header.readUInt16BE(i)
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16)
  header.writeUInt16BE(~sum & 0xffff, 10)
  return Buffer.concat([header, body])
}

/** A UDP-in-IPv6 packet; addresses in full form. */
export const ipv6Packet = (source: string, destination: string, payload: string): Buffer => {
  const body = udp(Buffer.from(payload))
  const header = Buffer.alloc(40)
  header[0] = 0x60
  header.writeUInt16BE(body.length, 4)
  header[6] = 17
  header[7] = 64
  header.set(ipv6Bytes(source), 8)
  header.set(ipv6Bytes(destination), 24)
  return Buffer.concat([header, body])
}

export const frame = (packet: Buffer): Buffer => {
  const length = Buffer.alloc(4)
  length.writeUInt32BE(packet.length)
  return Buffer.concat([length, packet])
}

export interface RelayClient {
  readonly socket: net.Socket
  /** the next packet the relay delivers; rejects after `timeoutMs` */
  next(timeoutMs?: number): Promise<Buffer>
  /** whether a packet arrives within `ms` */
  receivesWithin(ms: number): Promise<boolean>
  send(packet: Buffer): void
  closed: Promise<void>
}

/** Connects to the relay as `nodeKey`; rejects with the relay's error line when it refuses. */
export const connectRelay = (testnet: Testnet, key: string): Promise<RelayClient> =>
  new Promise((resolve, reject) => {
    const socket = net.connect(testnet.relaySocket)
    let buffer = Buffer.alloc(0)
    let greeted = false
    const packets: Array<Buffer> = []
    const waiters: Array<(packet: Buffer) => void> = []
    const closed = new Promise<void>((done) => socket.on("close", () => done()))
    socket.on("error", reject)
    socket.on("connect", () => socket.write(`${JSON.stringify({ nodeKey: key })}\n`))
    socket.on("data", (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk])
      if (!greeted) {
        const end = buffer.indexOf(0x0a)
        if (end < 0) return
        const reply = JSON.parse(buffer.subarray(0, end).toString("utf8"))
        buffer = buffer.subarray(end + 1)
        if (reply.ok !== true) {
          socket.destroy()
          reject(new Error(reply.error))
          return
        }
        greeted = true
        resolve(client)
      }
      while (buffer.length >= 4 && buffer.length >= 4 + buffer.readUInt32BE(0)) {
        const length = buffer.readUInt32BE(0)
        const packet = Buffer.from(buffer.subarray(4, 4 + length))
        buffer = buffer.subarray(4 + length)
        const waiter = waiters.shift()
        if (waiter !== undefined) waiter(packet)
        else packets.push(packet)
      }
    })
    const client: RelayClient = {
      socket,
      closed,
      next: (timeoutMs = 2000) => {
        const queued = packets.shift()
        if (queued !== undefined) return Promise.resolve(queued)
        return new Promise((done, fail) => {
          const timer = setTimeout(() => {
            waiters.splice(waiters.indexOf(waiter), 1)
            fail(new Error(`no packet within ${timeoutMs} ms`))
          }, timeoutMs)
          const waiter = (packet: Buffer) => {
            clearTimeout(timer)
            done(packet)
          }
          waiters.push(waiter)
        })
      },
      receivesWithin: (ms) => client.next(ms).then((packet) => (packets.unshift(packet), true), () => false),
      send: (packet) => socket.write(frame(packet))
    }
  })

/** Polls `condition` every 10 ms until it holds, for at most `timeoutMs`. */
export const eventually = async (condition: () => boolean, timeoutMs = 2000): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("condition did not hold in time")
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import { Worker } from "node:worker_threads"

/** The tailnet ranges every node routes into its TUN device. */
export const TAILNET_ROUTES = ["100.64.0.0/10", "fd7a:115c:a1e0::/48"] as const
export const TUN_MTU = 1280

const TUNSETIFF = 0x400454ca
const IFF_TUN = 0x0001
const IFF_NO_PI = 0x1000
const IFNAMSIZ = 16

interface Libc {
  readonly ioctl: (fd: number, request: number, arg: unknown) => number
  readonly errno: () => number
  readonly ptr: (view: Uint8Array) => unknown
}

let libc: Libc | undefined

/** libc through bun:ffi (the daemon always runs compiled with Bun; Node has no ioctl). */
const loadLibc = (): Libc => {
  if (libc !== undefined) return libc
  if (typeof (globalThis as { Bun?: unknown }).Bun === "undefined") throw new Error("TUN mode needs the Bun runtime (bun:ffi)")
  interface BunFfi {
    dlopen: (lib: string, symbols: Record<string, { args: Array<string>; returns: string }>) => {
      symbols: { ioctl: (fd: number, req: number, arg: unknown) => number; __errno_location: () => unknown }
    }
    ptr: (view: Uint8Array) => unknown
    read: { i32: (p: unknown, offset: number) => number }
  }
  const ffi = require("bun:ffi") as BunFfi
  const { symbols } = ffi.dlopen("libc.so.6", {
    ioctl: { args: ["i32", "u64", "ptr"], returns: "i32" },
    __errno_location: { args: [], returns: "ptr" }
  })
  libc = {
    ioctl: (fd, request, arg) => symbols.ioctl(fd, request, arg),
    errno: () => ffi.read.i32(symbols.__errno_location(), 0),
    ptr: ffi.ptr
  }
  return libc
}

/** Reads packets with blocking read(2) calls on its own thread: one read is one packet. */
const READER_SOURCE = `
const fs = require("node:fs")
const { workerData, parentPort } = require("node:worker_threads")
const buffer = Buffer.alloc(65536)
for (;;) {
  let n
  try {
    n = fs.readSync(workerData.fd, buffer, 0, buffer.length, null)
  } catch (e) {
    if (e && e.code === "EAGAIN") continue
    parentPort.postMessage({ error: String(e && e.message || e) })
    break
  }
  if (n > 0) {
    const packet = Uint8Array.prototype.slice.call(buffer, 0, n)
    parentPort.postMessage(packet, [packet.buffer])
  }
}
`

const ip = (args: ReadonlyArray<string>) => {
  try {
    execFileSync("ip", args, { stdio: ["ignore", "pipe", "pipe"], encoding: "utf8" })
  } catch (e) {
    const stderr = String((e as { stderr?: string }).stderr ?? "").trim()
    throw new Error(`ip ${args.join(" ")} failed: ${stderr || (e as Error).message}`)
  }
}

/** A TUN device in the daemon's network namespace, owned by this process (it disappears when the fd closes). */
export class TunDevice {
  private readonly reader: Worker
  private closed = false

  private constructor(readonly name: string, private readonly fd: number, onPacket: (packet: Uint8Array) => void, onError: (message: string) => void) {
    this.reader = new Worker(READER_SOURCE, { eval: true, workerData: { fd } })
    this.reader.unref()
    this.reader.on("message", (m: Uint8Array | { error: string }) => {
      if (this.closed) return
      if (m instanceof Uint8Array) onPacket(m)
      else onError(`reading ${name}: ${m.error}`)
    })
    this.reader.on("error", (e) => this.closed || onError(`reading ${name}: ${e.message}`))
  }

  /** Opens /dev/net/tun, attaches it to interface `name` (IFF_TUN | IFF_NO_PI), sets MTU 1280 and brings it up. */
  static open(name: string, onPacket: (packet: Uint8Array) => void, onError: (message: string) => void): TunDevice {
    if (Buffer.byteLength(name) >= IFNAMSIZ) throw new Error(`interface name too long: ${name}`)
    const c = loadLibc()
    const fd = fs.openSync("/dev/net/tun", fs.constants.O_RDWR)
    const ifreq = new Uint8Array(40)
    ifreq.set(Buffer.from(name))
    new DataView(ifreq.buffer).setUint16(IFNAMSIZ, IFF_TUN | IFF_NO_PI, true)
    if (c.ioctl(fd, TUNSETIFF, c.ptr(ifreq)) < 0) {
      const errno = c.errno()
      fs.closeSync(fd)
      throw new Error(`creating TUN device ${name}: ioctl(TUNSETIFF) failed with errno ${errno}${errno === 1 ? " (EPERM: needs CAP_NET_ADMIN)" : ""}`)
    }
    try {
      ip(["link", "set", "dev", name, "mtu", String(TUN_MTU), "up"])
    } catch (e) {
      fs.closeSync(fd)
      throw e
    }
    return new TunDevice(name, fd, onPacket, onError)
  }

  /** Gives the interface the node's addresses (/32, /128 without DAD) and routes the tailnet ranges into it. */
  configure(addresses: ReadonlyArray<string>): void {
    this.deconfigure()
    for (const address of addresses) {
      if (address.includes(":")) ip(["-6", "addr", "add", `${address}/128`, "dev", this.name, "nodad"])
      else ip(["addr", "add", `${address}/32`, "dev", this.name])
    }
    for (const route of TAILNET_ROUTES) ip([route.includes(":") ? "-6" : "-4", "route", "replace", route, "dev", this.name])
  }

  /** Removes the addresses and routes (the device stays). */
  deconfigure(): void {
    for (const args of [["-4", "addr", "flush", "dev", this.name], ["-6", "addr", "flush", "dev", this.name, "scope", "global"]]) {
      try {
        ip(args)
      } catch {
        // nothing to flush
      }
    }
    for (const route of TAILNET_ROUTES) {
      try {
        ip([route.includes(":") ? "-6" : "-4", "route", "del", route, "dev", this.name])
      } catch {
        // not there
      }
    }
  }

  write(packet: Uint8Array): void {
    if (this.closed) return
    try {
      fs.writeSync(this.fd, packet)
    } catch {
      // a packet the kernel refuses (malformed, interface down) is dropped, as a real TUN would
    }
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    void this.reader.terminate().catch(() => undefined)
    try {
      fs.closeSync(this.fd)
    } catch {
      // already closed
    }
  }
}

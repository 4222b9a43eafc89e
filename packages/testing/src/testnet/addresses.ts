import * as net from "node:net"

/** The tailnet's n-th IPv4 address: 100.64.0.0 + n (Headscale's sequential allocation in 100.64.0.0/10). */
export const ipv4Of = (n: number): string => {
  if (!Number.isInteger(n) || n < 1 || n >= 1 << 22) throw new RangeError(`no IPv4 address ${n} in 100.64.0.0/10`)
  const value = ((100 << 24) | (64 << 16)) + n
  return [value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff].join(".")
}

/** The IPv6 address that goes with `ipv4Of(n)`: fd7a:115c:a1e0::n (n in hex, as Headscale pairs them). */
export const ipv6Of = (n: number): string => {
  const high = Math.floor(n / 0x10000)
  const low = n % 0x10000
  return `fd7a:115c:a1e0::${high > 0 ? `${high.toString(16)}:` : ""}${low.toString(16)}`
}

/** The 4 or 16 bytes of an IP address in text form; undefined when it is not one. */
export const parseIp = (text: string): Uint8Array | undefined => {
  if (net.isIPv4(text)) return Uint8Array.from(text.split(".").map(Number))
  if (!net.isIPv6(text) || text.includes("%")) return undefined
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text)
  const tail = dotted === null ? [] : [(Number(dotted[1]) << 8) | Number(dotted[2]), (Number(dotted[3]) << 8) | Number(dotted[4])]
  // "::ffff:1.2.3.4" -> "::ffff:" + the two groups in tail
  const body = dotted === null ? text : text.slice(0, dotted.index).replace(/([^:]):$/, "$1")
  const groupsOf = (part: string) => (part === "" ? [] : part.split(":").map((g) => parseInt(g, 16)))
  const [head, rest] = body.split("::") as [string, string | undefined]
  if (rest === undefined) return toBytes([...groupsOf(head), ...tail])
  const left = groupsOf(head)
  const right = [...groupsOf(rest), ...tail]
  return toBytes([...left, ...Array<number>(8 - left.length - right.length).fill(0), ...right])
}

const toBytes = (groups: ReadonlyArray<number>): Uint8Array | undefined => {
  if (groups.length !== 8) return undefined
  const bytes = new Uint8Array(16)
  groups.forEach((g, i) => {
    bytes[2 * i] = g >>> 8
    bytes[2 * i + 1] = g & 0xff
  })
  return bytes
}

/** A map key for an address given as bytes (IPv4 and IPv6 never collide). */
export const addressKey = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex")

export interface Prefix {
  readonly bytes: Uint8Array
  readonly bits: number
}

/** `10.1.0.0/24` or `fd00::/64`; undefined when the text is not a CIDR prefix. */
export const parsePrefix = (text: string): Prefix | undefined => {
  const match = /^([^/]+)\/(\d{1,3})$/.exec(text)
  if (match === null) return undefined
  const bytes = parseIp(match[1]!)
  const bits = Number(match[2])
  if (bytes === undefined || bits > bytes.length * 8) return undefined
  return { bytes, bits }
}

export const prefixContains = (prefix: Prefix, address: Uint8Array): boolean => {
  if (prefix.bytes.length !== address.length) return false
  for (let bit = 0; bit < prefix.bits; bit += 8) {
    const take = Math.min(8, prefix.bits - bit)
    const mask = (0xff << (8 - take)) & 0xff
    const i = bit / 8
    if ((prefix.bytes[i]! & mask) !== (address[i]! & mask)) return false
  }
  return true
}

/** The destination address of a raw IPv4 or IPv6 packet (header bytes 16-19, or 24-39). */
export const destinationOf = (packet: Uint8Array): Uint8Array | undefined => {
  const version = packet[0]! >>> 4
  if (version === 4 && packet.length >= 20) return packet.subarray(16, 20)
  if (version === 6 && packet.length >= 40) return packet.subarray(24, 40)
  return undefined
}

export const isExitRoute = (route: string): boolean => route === "0.0.0.0/0" || route === "::/0"

import { parseAddress } from "./ip.ts"

/**
 * Quad-100, MagicDNS's resolver (100.100.100.100 and fd7a:115c:a1e0::53), answered inside the
 * daemon for packets that reach the TUN device: A and AAAA for the tailnet's names, NXDOMAIN for
 * other names under the MagicDNS suffix, SERVFAIL for the rest (the real one forwards those).
 */

export const QUAD_100_V4 = "100.100.100.100"
export const QUAD_100_V6 = "fd7a:115c:a1e0::53"

const Q4 = parseAddress(QUAD_100_V4)!
const Q6 = parseAddress(QUAD_100_V6)!
const UDP = 17
const TYPE_A = 1
const TYPE_AAAA = 28

export interface NameLookup {
  readonly suffix: string
  /** the node's addresses for a lower-case FQDN without the trailing dot, or undefined */
  readonly addresses: (name: string) => ReadonlyArray<string> | undefined
}

const equal = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((v, i) => v === b[i])

const sum16 = (data: Uint8Array, initial = 0) => {
  let sum = initial
  for (let i = 0; i + 1 < data.length; i += 2) sum += (data[i]! << 8) | data[i + 1]!
  if (data.length % 2 === 1) sum += data[data.length - 1]! << 8
  return sum
}

const fold = (sum: number) => {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  return ~sum & 0xffff
}

interface Udp {
  readonly v6: boolean
  readonly src: Uint8Array
  readonly srcPort: number
  readonly payload: Uint8Array
}

const quad100Query = (p: Uint8Array): Udp | undefined => {
  const version = p[0]! >> 4
  if (version === 4 && p.length >= 28) {
    const ihl = (p[0]! & 0x0f) * 4
    if (p[9] !== UDP || !equal(p.subarray(16, 20), Q4) || p.length < ihl + 8) return undefined
    const udp = p.subarray(ihl)
    if (((udp[2]! << 8) | udp[3]!) !== 53) return undefined
    return { v6: false, src: p.slice(12, 16), srcPort: (udp[0]! << 8) | udp[1]!, payload: udp.subarray(8, (udp[4]! << 8 | udp[5]!)) }
  }
  if (version === 6 && p.length >= 48) {
    if (p[6] !== UDP || !equal(p.subarray(24, 40), Q6)) return undefined
    const udp = p.subarray(40)
    if (((udp[2]! << 8) | udp[3]!) !== 53) return undefined
    return { v6: true, src: p.slice(8, 24), srcPort: (udp[0]! << 8) | udp[1]!, payload: udp.subarray(8, (udp[4]! << 8 | udp[5]!)) }
  }
  return undefined
}

const readName = (msg: Uint8Array, offset: number): { name: string; end: number } | undefined => {
  const labels: Array<string> = []
  let i = offset
  while (i < msg.length) {
    const len = msg[i]!
    if (len === 0) return { name: labels.join(".").toLowerCase(), end: i + 1 }
    if (len > 63 || i + 1 + len > msg.length) return undefined
    labels.push(Buffer.from(msg.subarray(i + 1, i + 1 + len)).toString("latin1"))
    i += 1 + len
  }
  return undefined
}

/** The DNS answer to one query message, or undefined when it is not a query we can parse. */
export const answerDns = (query: Uint8Array, lookup: NameLookup): Uint8Array | undefined => {
  if (query.length < 12 || (query[2]! & 0x80) !== 0) return undefined
  const qdcount = (query[4]! << 8) | query[5]!
  if (qdcount !== 1) return undefined
  const question = readName(query, 12)
  if (question === undefined || question.end + 4 > query.length) return undefined
  const qtype = (query[question.end]! << 8) | query[question.end + 1]!
  const questionBytes = query.subarray(12, question.end + 4)
  const name = question.name.replace(/\.$/, "")
  const inTailnet = name === lookup.suffix || name.endsWith(`.${lookup.suffix}`)
  const addresses = inTailnet ? lookup.addresses(name) : undefined
  const rcode = !inTailnet ? 2 : addresses === undefined ? 3 : 0
  const records = (addresses ?? [])
    .map((a) => parseAddress(a)!)
    .filter((a) => (qtype === TYPE_A && a.length === 4) || (qtype === TYPE_AAAA && a.length === 16))
  const answers = records.map((rdata) => {
    const rr = new Uint8Array(12 + rdata.length)
    rr.set([0xc0, 0x0c, 0, qtype, 0, 1, 0, 0, 0x02, 0x58, 0, rdata.length])
    rr.set(rdata, 12)
    return rr
  })
  const out = new Uint8Array(12 + questionBytes.length + answers.reduce((n, a) => n + a.length, 0))
  out.set([query[0]!, query[1]!, 0x84 | (query[2]! & 0x79), 0x80 | rcode, 0, 1, 0, answers.length, 0, 0, 0, 0])
  out.set(questionBytes, 12)
  let at = 12 + questionBytes.length
  for (const a of answers) {
    out.set(a, at)
    at += a.length
  }
  return out
}

/** The reply packet for a DNS query to quad-100 read from the TUN device; undefined for any other packet. */
export const answerQuad100 = (packet: Uint8Array, lookup: NameLookup): Uint8Array | undefined => {
  const udp = quad100Query(packet)
  if (udp === undefined) return undefined
  const dns = answerDns(udp.payload, lookup)
  if (dns === undefined) return undefined
  const udpLength = 8 + dns.length
  const segment = new Uint8Array(udpLength)
  segment.set([0, 53, udp.srcPort >> 8, udp.srcPort & 0xff, udpLength >> 8, udpLength & 0xff, 0, 0])
  segment.set(dns, 8)
  if (!udp.v6) {
    const ip = new Uint8Array(20 + udpLength)
    ip.set([0x45, 0, ip.length >> 8, ip.length & 0xff, 0, 0, 0x40, 0, 64, UDP, 0, 0])
    ip.set(Q4, 12)
    ip.set(udp.src, 16)
    const checksum = fold(sum16(ip.subarray(0, 20)))
    ip[10] = checksum >> 8
    ip[11] = checksum & 0xff
    ip.set(segment, 20)
    return ip
  }
  const pseudo = sum16(Q6, sum16(udp.src, udpLength + UDP))
  const checksum = fold(sum16(segment, pseudo)) || 0xffff
  segment[6] = checksum >> 8
  segment[7] = checksum & 0xff
  const ip = new Uint8Array(40 + udpLength)
  ip.set([0x60, 0, 0, 0, udpLength >> 8, udpLength & 0xff, UDP, 64])
  ip.set(Q6, 8)
  ip.set(udp.src, 24)
  ip.set(segment, 40)
  return ip
}

import * as net from "node:net"

/** An IPv4 or IPv6 address as bytes, or undefined when `text` is neither. */
export const parseAddress = (text: string): Uint8Array | undefined => {
  if (net.isIPv4(text)) return Uint8Array.from(text.split(".").map(Number))
  if (!net.isIPv6(text) || text.includes("%")) return undefined
  const [head, tail] = text.includes("::") ? text.split("::") as [string, string] : [text, undefined]
  const groups = (s: string) => (s === "" ? [] : s.split(":"))
  const expand = (parts: Array<string>) =>
    parts.flatMap((p) => (p.includes(".") ? [...parseAddress(p)!].reduce<Array<number>>((acc, b, i) => (i % 2 === 0 ? [...acc, b << 8] : [...acc.slice(0, -1), acc.at(-1)! | b]), []) : [parseInt(p, 16)]))
  const left = expand(groups(head))
  const right = tail === undefined ? [] : expand(groups(tail))
  const words = tail === undefined ? left : [...left, ...Array<number>(8 - left.length - right.length).fill(0), ...right]
  const bytes = new Uint8Array(16)
  words.forEach((w, i) => {
    bytes[2 * i] = w >> 8
    bytes[2 * i + 1] = w & 0xff
  })
  return bytes
}

export const formatAddress = (bytes: Uint8Array): string => {
  if (bytes.length === 4) return [...bytes].join(".")
  const words = Array.from({ length: 8 }, (_, i) => (bytes[2 * i]! << 8) | bytes[2 * i + 1]!)
  let best = { start: -1, len: 0 }
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && words[j] === 0) j++
    if (j - i > best.len && j - i > 1) best = { start: i, len: j - i }
    i = j
  }
  const hex = words.map((w) => w.toString(16))
  if (best.start < 0) return hex.join(":")
  return `${hex.slice(0, best.start).join(":")}::${hex.slice(best.start + best.len).join(":")}`
}

/** Clears the host bits of a prefix. */
export const maskAddress = (bytes: Uint8Array, bits: number): Uint8Array =>
  bytes.map((b, i) => (i * 8 >= bits ? 0 : i * 8 + 8 <= bits ? b : b & (0xff << (8 - (bits - i * 8)))))

/** What netip.ParsePrefix says about text that is not a prefix; undefined for a prefix (host bits may be set). */
export const parsePrefixError = (text: string): string | undefined => {
  const fail = (msg: string) => `netip.ParsePrefix(${JSON.stringify(text)}): ${msg}`
  const slash = text.lastIndexOf("/")
  if (slash < 0) return fail("no '/'")
  const addr = parseAddress(text.slice(0, slash))
  if (addr === undefined) return fail(`ParseAddr(${JSON.stringify(text.slice(0, slash))}): unable to parse IP`)
  const bitsText = text.slice(slash + 1)
  if (!/^(0|[1-9]\d*)$/.test(bitsText)) return fail(`bad bits after slash: ${JSON.stringify(bitsText)}`)
  if (Number(bitsText) > addr.length * 8) return fail("prefix length out of range")
  return undefined
}

/** A prefix with host bits set, as tailscaled's checkAdvertiseRoutes words it; undefined when masked. */
export const hostBitsError = (text: string): string | undefined => {
  const slash = text.lastIndexOf("/")
  const addr = parseAddress(text.slice(0, slash))!
  const bits = Number(text.slice(slash + 1))
  const canonical = `${formatAddress(maskAddress(addr, bits))}/${bits}`
  return canonical === `${formatAddress(addr)}/${bits}` ? undefined : `route ${text} has non-address bits set; expected ${canonical}`
}

/** Either error above: a route tailscaled would not advertise. */
export const prefixError = (text: string): string | undefined => parsePrefixError(text) ?? hostBitsError(text)

/** Splits `ip`, `ip:port` or `[ip6]:port` into the address; undefined when it is none of those. */
export const addressOfHostPort = (text: string): string | undefined => {
  if (parseAddress(text) !== undefined) return text
  const bracketed = /^\[([^\]]+)\]:\d+$/.exec(text)
  if (bracketed !== null) return parseAddress(bracketed[1]!) !== undefined ? bracketed[1] : undefined
  const v4 = /^([^:]+):\d+$/.exec(text)
  if (v4 !== null) return parseAddress(v4[1]!) !== undefined ? v4[1] : undefined
  return undefined
}

export const sameAddress = (a: string, b: string): boolean => {
  const x = parseAddress(a)
  const y = parseAddress(b)
  return x !== undefined && y !== undefined && x.length === y.length && x.every((v, i) => v === y[i])
}

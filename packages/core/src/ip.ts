import { IpNetwork, NetAddress } from "effect/net"
import { Result } from "effect"

/**
 * Addresses as numbers for the allocator's arithmetic. Parsing and validation come from
 * `effect/net`; it keeps addresses opaque, so the offset math (next address, distance, bounds)
 * lives here. IPv6 codes carry bit 128 so that the two families never share a code.
 */
export type Family = 4 | 6

const V6_TAG = 1n << 128n

export interface Address {
  readonly family: Family
  /** the address as an unsigned integer, without the family tag */
  readonly value: bigint
}

export const code = (a: Address): bigint => (a.family === 6 ? a.value | V6_TAG : a.value)

export const parseAddress = (input: string): Result.Result<Address, string> => {
  const parsed = NetAddress.ipFromString(input)
  if (Result.isFailure(parsed)) return Result.fail(`"${input}" is not an IP address (${parsed.failure.message})`)
  return Result.succeed(fromNetAddress(parsed.success))
}

export const fromNetAddress = (ip: NetAddress.IpAddress): Address => {
  if (ip._tag === "Ipv4Address") {
    const [a, b, c, d] = NetAddress.ipv4ToOctets(ip)
    return { family: 4, value: BigInt(((a << 24) >>> 0) + (b << 16) + (c << 8) + d) }
  }
  let value = 0n
  for (const segment of NetAddress.ipv6ToSegments(ip)) value = (value << 16n) | BigInt(segment)
  return { family: 6, value }
}

export const formatAddress = (family: Family, value: bigint): string => {
  if (family === 4) {
    const n = Number(value)
    return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`
  }
  const segments: Array<number> = []
  for (let shift = 112n; shift >= 0n; shift -= 16n) segments.push(Number((value >> shift) & 0xffffn))
  return NetAddress.formatIp(NetAddress.ipv6FromSegments(segments as unknown as NetAddress.Ipv6Segments).pipe(Result.getOrThrow))
}

export interface Subnet {
  readonly family: Family
  readonly network: bigint
  readonly prefix: number
  /** the last address of the subnet (the broadcast address for IPv4) */
  readonly last: bigint
  readonly text: string
}

export const parseSubnet = (input: string): Result.Result<Subnet, string> => {
  const parsed = IpNetwork.fromString(input)
  if (Result.isFailure(parsed)) {
    const hostBits = parsed.failure.message.includes("host bits")
    return Result.fail(
      hostBits
        ? `subnet "${input}" has host bits set: write the network address (for example ${networkOf(input) ?? "10.0.0.0/24"})`
        : `"${input}" is not a subnet in CIDR notation (${parsed.failure.message})`
    )
  }
  const network = parsed.success
  const first = fromNetAddress(IpNetwork.firstAddress(network))
  const last = fromNetAddress(IpNetwork.lastAddress(network))
  return Result.succeed({
    family: first.family,
    network: first.value,
    prefix: network.prefixLength,
    last: last.value,
    text: IpNetwork.format(network)
  })
}

const networkOf = (input: string): string | undefined => {
  const [addr, prefixText] = input.split("/")
  const prefix = Number(prefixText)
  if (addr === undefined || !Number.isInteger(prefix)) return undefined
  const parsed = parseAddress(addr)
  if (Result.isFailure(parsed)) return undefined
  const width = parsed.success.family === 4 ? 32 : 128
  if (prefix < 0 || prefix > width) return undefined
  const mask = ((1n << BigInt(width)) - 1n) ^ ((1n << BigInt(width - prefix)) - 1n)
  return `${formatAddress(parsed.success.family, parsed.success.value & mask)}/${prefix}`
}

export const contains = (subnet: Subnet, a: Address): boolean =>
  a.family === subnet.family && a.value >= subnet.network && a.value <= subnet.last

/** Parses "ip" or "ip/prefix" (the CNI `ips` convention); a given prefix must match the pool subnet's. */
export const parseRequestedAddress = (input: string): Result.Result<{ address: Address; prefix?: number }, string> => {
  const slash = input.indexOf("/")
  const parsed = parseAddress(slash === -1 ? input : input.slice(0, slash))
  if (Result.isFailure(parsed)) return Result.fail(parsed.failure)
  if (slash === -1) return Result.succeed({ address: parsed.success })
  const prefix = Number(input.slice(slash + 1))
  const width = parsed.success.family === 4 ? 32 : 128
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > width) {
    return Result.fail(`"${input}" has an invalid prefix length`)
  }
  return Result.succeed({ address: parsed.success, prefix })
}

/** Tailscale's 4via6 range: `fd7a:115c:a1e0:b1a::/64`, then a 32-bit site id, then the IPv4 address. */
const VIA_RANGE = 0xfd7a115ca1e00b1an << 64n

/**
 * The 4via6 prefix of an IPv4 subnet at a site (0-65535, as tailscale accepts), as `tailscale debug
 * via` prints it: an IPv4 /16 at site 7 is `fd7a:115c:a1e0:b1a:0:7:af4:0/112`. Peers reach the
 * subnet's address `a.b.c.d` of that site at the prefix's last 32 bits, or by the MagicDNS name
 * `a-b-c-d-via-<site>`.
 */
export const viaPrefix = (siteId: number, subnet: Subnet): string => {
  if (subnet.family !== 4) throw new Error(`4via6 maps IPv4 subnets, not ${subnet.text}`)
  if (!Number.isInteger(siteId) || siteId < 0 || siteId > 0xffff) throw new Error(`a 4via6 site id is 0 to 65535, not ${siteId}`)
  return `${formatAddress(6, VIA_RANGE | (BigInt(siteId) << 32n) | subnet.network)}/${subnet.prefix + 96}`
}

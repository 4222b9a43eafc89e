import { dnsLedBy, QUAD_100 } from "../magicDns.ts"
import type { MemberOptions, Spelling } from "../networkOptions.ts"
import type { MemberSettings } from "./memberSettings.ts"

/**
 * What a member network is and what a joined container gets, and the tailnet's rules about it
 * (MagicDNS, the TUN device's MAC, which addresses are the tailnet's), the same for every runtime.
 */

export { QUAD_100 }

/** A member network as an adapter decoded it. */
export interface MemberNetwork {
  readonly options: MemberOptions
  /** the plugin's (driver's) environment: `CONTAINERSCALE_AUTH_KEY`, `authKeyEnv`, the state directory */
  readonly env: Readonly<Record<string, string | undefined>>
  readonly spelling: Spelling
}

export interface Joined {
  readonly settings: MemberSettings
  /** the tailnet addresses, as CIDRs (`100.64.0.1/32`, `fd7a:115c:a1e0::1/128`) */
  readonly addresses: ReadonlyArray<string>
  /** the TUN device inside the container; undefined in userspace networking */
  readonly device: { readonly name: string; readonly mac: string } | undefined
  /** what the container's resolver should use, when MagicDNS is on and the tailnet has a suffix */
  readonly dns: { readonly nameservers: ReadonlyArray<string>; readonly search: ReadonlyArray<string> } | undefined
}

/**
 * A locally administered MAC for the TUN device, which has none, stable per node address: Podman
 * and some CNI consumers want one per interface.
 */
export const pseudoMac = (address: string) => {
  let h = 0x811c9dc5
  for (let i = 0; i < address.length; i++) h = Math.imul(h ^ address.charCodeAt(i), 0x01000193)
  const bytes = [0x02, 0x00, (h >>> 24) & 255, (h >>> 16) & 255, (h >>> 8) & 255, h & 255]
  return bytes.map((b) => b.toString(16).padStart(2, "0")).join(":")
}

/** MagicDNS first, then what the container had: 100.100.100.100 and the tailnet's search domain lead. */
export const withMagicDns = <D extends { readonly nameservers?: ReadonlyArray<string> | undefined; readonly search?: ReadonlyArray<string> | undefined }>(
  dns: D | undefined,
  joined: Joined
): D | undefined => (joined.dns === undefined ? dns : dnsLedBy(dns, joined.dns))

/** Tailscale's address ranges: which of a container's addresses its tailscaled owns. */
export const isTailnetAddress = (ip: string) => /^100\.|^fd7a:115c:a1e0:/i.test(ip)

import { Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"

/**
 * MagicDNS for every mode. Member containers ask their own tailscaled; router-mode pods ask the
 * node's, at the same address: the node routes 100.100.100.100 into its tailscale0, where
 * tailscaled answers whatever the source address. The tailnet's MagicDNS suffix, which pods get
 * as their search domain, is what the agent last read from the node's tailscaled, kept in
 * `<stateDir>/tailnet.json` so a plugin reads a file instead of asking tailscaled.
 */

/** MagicDNS's resolver, inside every tailnet node. */
export const QUAD_100 = "100.100.100.100"

export interface Dns {
  readonly nameservers?: ReadonlyArray<string> | undefined
  readonly search?: ReadonlyArray<string> | undefined
}

/** `lead` first, then what the container had: so MagicDNS answers first, and the rest stays as a fall-back. */
export const dnsLedBy = <D extends Dns>(dns: D | undefined, lead: { readonly nameservers: ReadonlyArray<string>; readonly search: ReadonlyArray<string> }): D => {
  const first = <A>(l: ReadonlyArray<A>, rest: ReadonlyArray<A> | undefined) => [...l, ...(rest ?? []).filter((x) => !l.includes(x))]
  return { ...dns, nameservers: first(lead.nameservers, dns?.nameservers), search: first(lead.search, dns?.search) } as unknown as D
}

const TailnetFile = Schema.Struct({ magicDnsSuffix: Schema.String })

const tailnetFile = (stateDir: string) => path.join(stateDir, "tailnet.json")

/** The MagicDNS suffix the agent recorded, if any. */
export const readMagicDnsSuffix = (stateDir: string): string | undefined => {
  try {
    return Schema.decodeUnknownSync(TailnetFile)(JSON.parse(fs.readFileSync(tailnetFile(stateDir), "utf8"))).magicDnsSuffix || undefined
  } catch {
    return undefined
  }
}

export const writeMagicDnsSuffix = (stateDir: string, magicDnsSuffix: string) => {
  if (readMagicDnsSuffix(stateDir) === magicDnsSuffix) return
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 })
  fs.writeFileSync(`${tailnetFile(stateDir)}.tmp`, JSON.stringify({ magicDnsSuffix }), { mode: 0o644 })
  fs.renameSync(`${tailnetFile(stateDir)}.tmp`, tailnetFile(stateDir))
}

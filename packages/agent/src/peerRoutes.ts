import type { PeerStatus } from "@containerscale/core/member"
import { Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"

/**
 * The other nodes' routes as this node's tailscaled sees them (their pod CIDRs, in a cluster),
 * remembered in `<stateDir>/peer-routes.json` by the agent's router pass, so that a node that
 * left the tailnet, or stopped serving its routes, is still named with the reason its pods are
 * unreachable. A node gone for a day is forgotten.
 */

export const PeerRoutes = Schema.Struct({
  id: Schema.String,
  node: Schema.String,
  routes: Schema.Array(Schema.String),
  online: Schema.Boolean,
  /** ISO time it left the tailnet (no longer a peer) */
  gone: Schema.optional(Schema.String),
  /** ISO time it stopped serving `routes` while still a peer */
  withdrawn: Schema.optional(Schema.String)
})
export type PeerRoutes = typeof PeerRoutes.Type

const FORGET_MS = 24 * 3600_000

const file = (stateDir: string) => path.join(stateDir, "peer-routes.json")

export const readPeerRoutes = (stateDir: string): ReadonlyArray<PeerRoutes> => {
  try {
    return Schema.decodeUnknownSync(Schema.Array(PeerRoutes))(JSON.parse(fs.readFileSync(file(stateDir), "utf8")))
  } catch {
    return []
  }
}

/** The peers serving routes now, and those remembered that no longer do. */
export const mergePeerRoutes = (before: ReadonlyArray<PeerRoutes>, peers: ReadonlyArray<PeerStatus>, now: Date): Array<PeerRoutes> => {
  const at = now.toISOString()
  const serving = peers.filter((p) => (p.PrimaryRoutes ?? []).length > 0)
  const current = serving.map((p): PeerRoutes => ({
    id: p.ID,
    node: p.HostName,
    routes: [...(p.PrimaryRoutes ?? [])].sort(),
    online: p.Online
  }))
  const remembered = before.flatMap((b): Array<PeerRoutes> => {
    if (serving.some((p) => p.ID === b.id)) return []
    const since = b.gone ?? b.withdrawn ?? at
    if (now.getTime() - Date.parse(since) > FORGET_MS) return []
    const stillPeer = peers.some((p) => p.ID === b.id)
    return [stillPeer ? { ...b, gone: undefined, withdrawn: b.withdrawn ?? at } : { ...b, withdrawn: undefined, gone: b.gone ?? at }]
  })
  return [...current, ...remembered].sort((a, b) => a.node.localeCompare(b.node))
}

/** Why a remembered node's routes are, or are not, reachable from here. */
export const peerRouteState = (p: PeerRoutes): string =>
  p.gone !== undefined
    ? `unreachable: ${p.node} left the tailnet at ${p.gone}`
    : p.withdrawn !== undefined
    ? `unreachable: ${p.node} stopped serving them at ${p.withdrawn}`
    : p.online
    ? `served by ${p.node}`
    : `unreachable while ${p.node} is offline (its routes stay assigned to it)`

/** Merges what the node's tailscaled says now into the file; a pass that changed nothing writes nothing. */
export const recordPeerRoutes = (stateDir: string, peers: ReadonlyArray<PeerStatus>, now: Date) => {
  const before = readPeerRoutes(stateDir)
  const entries = mergePeerRoutes(before, peers, now)
  if (JSON.stringify(entries) === JSON.stringify(before)) return
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 })
  fs.writeFileSync(`${file(stateDir)}.tmp`, JSON.stringify(entries), { mode: 0o600 })
  fs.renameSync(`${file(stateDir)}.tmp`, file(stateDir))
}

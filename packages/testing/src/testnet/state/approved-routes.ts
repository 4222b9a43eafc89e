import { parsePrefixError } from "../../tailscaled/ip.ts"
import { isExitRoute, parsePrefix } from "../addresses.ts"
import type { StoredNode } from "../store.ts"
import { type Tables, TestnetFailure } from "./shared.ts"

/**
 * Approved routes, as Headscale 0.26+ keeps them: a set on the node, replaced as a whole
 * (`approve_routes`), sorted as Headscale sorts prefixes; approving either exit route approves
 * both. The 0.25 route rows write the same set. Headscale 0.29 sends a node its own approved
 * routes only in the answer to the node's next map request (a login, or a new Hostinfo); its
 * peers learn them at once: `selfView` is what the node was last told.
 */

const compareBytes = (a: Uint8Array, b: Uint8Array) => {
  if (a.length !== b.length) return a.length - b.length
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!
  return 0
}

/** Headscale's order for prefixes (tsaddr.SortPrefixes): IPv4 first, then by address, then by length. */
const sortPrefixes = (routes: ReadonlyArray<string>): Array<string> =>
  [...new Set(routes)]
    .map((text) => ({ text, prefix: parsePrefix(text)! }))
    .sort((x, y) => compareBytes(x.prefix.bytes, y.prefix.bytes) || x.prefix.bits - y.prefix.bits)
    .map((x) => x.text)

export class ApprovedRoutes {
  /** The approved routes each node was last told about itself (0.26+). */
  private readonly selfViews = new Map<number, ReadonlyArray<string>>()
  private readonly t: Tables

  constructor(tables: Tables) {
    this.t = tables
  }

  /** Replaces the approved set; approving either exit route approves both. */
  approveRoutes(id: number, routes: ReadonlyArray<string>): StoredNode {
    const expanded: Array<string> = []
    for (const route of routes) {
      const problem = parsePrefixError(route)
      if (problem !== undefined || parsePrefix(route) === undefined) throw new TestnetFailure("unknown", `parsing route: ${problem ?? `netip.ParsePrefix(${JSON.stringify(route)}): invalid prefix`}`)
      expanded.push(...(isExitRoute(route) ? ["0.0.0.0/0", "::/0"] : [route]))
    }
    const node = this.t.nodeOr(id, "invalid-argument")
    const approved = { ...node, approvedRoutes: sortPrefixes(expanded) }
    this.t.nodesById.set(id, approved)
    this.t.save()
    return approved
  }

  /** The node has just been told about itself (a login, or a new Hostinfo). */
  seenBySelf(node: StoredNode): StoredNode {
    this.selfViews.set(node.id, node.approvedRoutes)
    return node
  }

  /** The node as it last saw itself. */
  selfView(node: StoredNode): StoredNode {
    return { ...node, approvedRoutes: this.selfViews.get(node.id) ?? node.approvedRoutes }
  }

  forgetNode(id: number): void {
    this.selfViews.delete(id)
  }
}

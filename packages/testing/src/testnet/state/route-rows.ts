import { isExitRoute } from "../addresses.ts"
import type { StoredNode } from "../store.ts"
import type { ApprovedRoutes } from "./approved-routes.ts"
import { nowIso, type Tables, TestnetFailure } from "./shared.ts"

/**
 * Route rows, the routes API of Headscale up to 0.25: a row appears once a node advertises a
 * prefix, and approving it means enabling the row by id (which must be advertised: both, for an
 * exit route). Whether a row is advertised and enabled is not stored here: it is the node's
 * advertised and approved sets, so enabling writes the same approved set as 0.26+ does. Rows are
 * kept in memory only and rebuilt from the advertised routes when the state is loaded, so their
 * ids may change across a restart (Headscale keeps them in its database).
 */

/**
 * A route row of Headscale up to 0.25, created once a node advertises the prefix. Whether it is
 * advertised and enabled is not stored here: it is the node's advertised and approved sets.
 */
interface RouteRow {
  readonly id: number
  readonly nodeId: number
  readonly prefix: string
  readonly createdAt: string
  updatedAt: string
  /** the advertised state last seen, to move `updatedAt` when it changes */
  advertised: boolean
  /**
   * Headscale 0.25's `is_primary`: set when the row is enabled and its prefix has no primary yet,
   * moved to another enabled row on an online node when this one is disabled or its node goes
   * offline, and otherwise kept (a disabled row can stay primary). Never set for exit routes.
   */
  primary: boolean
}

/** A route row as the 0.25 API shows it. */
export interface RouteView {
  readonly id: number
  readonly node: StoredNode
  readonly prefix: string
  readonly advertised: boolean
  readonly enabled: boolean
  readonly isPrimary: boolean
  readonly createdAt: string
  readonly updatedAt: string
}

export class RouteRows {
  private readonly routeRows = new Map<number, RouteRow>()
  private nextRouteId = 1
  private readonly t: Tables
  private readonly approved: ApprovedRoutes

  /** Rows for the loaded nodes' advertised routes, with a primary for each enabled prefix. */
  constructor(tables: Tables, approved: ApprovedRoutes) {
    this.t = tables
    this.approved = approved
    for (const node of [...this.t.nodesById.values()].sort((a, b) => a.id - b.id)) this.syncRouteRows(node)
    for (const row of this.routeRows.values()) {
      if (isExitRoute(row.prefix) || !this.rowEnabled(row)) continue
      if (![...this.routeRows.values()].some((other) => other.prefix === row.prefix && other.primary)) row.primary = true
    }
  }

  /** A deleted node's rows go with it. */
  forgetNode(id: number): void {
    for (const row of this.routeRows.values()) if (row.nodeId === id) this.routeRows.delete(row.id)
  }

  /** A node that went offline hands its primary rows on. */
  nodeOffline(id: number): void {
    for (const row of this.routeRows.values()) if (row.nodeId === id) this.failover(row)
  }

  /** Adds a row for each newly advertised prefix and notes advertised-state changes. */
  syncRouteRows(node: StoredNode): void {
    const now = nowIso()
    const rows = [...this.routeRows.values()].filter((row) => row.nodeId === node.id)
    for (const row of rows) {
      const advertised = node.advertisedRoutes.includes(row.prefix)
      if (advertised !== row.advertised) {
        row.advertised = advertised
        row.updatedAt = now
      }
    }
    for (const prefix of node.advertisedRoutes) {
      if (rows.some((row) => row.prefix === prefix)) continue
      const row: RouteRow = { id: this.nextRouteId++, nodeId: node.id, prefix, createdAt: now, updatedAt: now, advertised: true, primary: false }
      this.routeRows.set(row.id, row)
    }
  }

  /** Every route row (of one node when `nodeId` is given), by id. */
  routes(nodeId?: number): Array<RouteView> {
    if (nodeId !== undefined) this.t.node(nodeId)
    return [...this.routeRows.values()]
      .filter((row) => nodeId === undefined || row.nodeId === nodeId)
      .sort((a, b) => a.id - b.id)
      .flatMap((row) => {
        const node = this.t.nodesById.get(row.nodeId)
        return node === undefined ? [] : [this.routeView(row, node)]
      })
  }

  private routeView(row: RouteRow, node: StoredNode): RouteView {
    const advertised = node.advertisedRoutes.includes(row.prefix)
    const enabled = advertised && node.approvedRoutes.includes(row.prefix)
    return {
      id: row.id,
      node,
      prefix: row.prefix,
      advertised,
      enabled,
      isPrimary: row.primary,
      createdAt: row.createdAt,
      updatedAt: row.updatedAt
    }
  }

  private rowEnabled(row: RouteRow): boolean {
    const node = this.t.nodesById.get(row.nodeId)
    return node !== undefined && node.advertisedRoutes.includes(row.prefix) && node.approvedRoutes.includes(row.prefix)
  }

  /** Moves a primary row's role to an enabled row of the same prefix on an online node, if there is one. */
  private failover(row: RouteRow): void {
    if (!row.primary) return
    const next = [...this.routeRows.values()]
      .sort((a, b) => a.id - b.id)
      .find((other) => other.id !== row.id && other.prefix === row.prefix && this.rowEnabled(other) && this.t.online.has(other.nodeId))
    if (next === undefined) return
    row.primary = false
    next.primary = true
  }

  private routeRow(id: number): RouteRow {
    const row = this.routeRows.get(id)
    if (row === undefined || !this.t.nodesById.has(row.nodeId)) throw new TestnetFailure("not-found", "route not found")
    return row
  }

  /** The prefixes an action on a row acts on: both exit routes for either one. */
  private rowPrefixes(row: RouteRow): Array<string> {
    return isExitRoute(row.prefix) ? ["0.0.0.0/0", "::/0"] : [row.prefix]
  }

  /** Enables a row: its prefix joins the node's approved set; it must be advertised (both, for an exit route). */
  enableRoute(id: number): RouteView {
    const row = this.routeRow(id)
    const node = this.t.node(row.nodeId)
    for (const prefix of this.rowPrefixes(row)) {
      if (!node.advertisedRoutes.includes(prefix)) {
        throw new TestnetFailure("unknown", `route (${prefix}) is not available on node ${node.hostname}: route is not available on node`)
      }
    }
    this.touchRows(row)
    const approved = this.approved.approveRoutes(node.id, [...node.approvedRoutes, row.prefix])
    if (!isExitRoute(row.prefix) && ![...this.routeRows.values()].some((other) => other.prefix === row.prefix && other.primary)) row.primary = true
    return this.routeView(row, approved)
  }

  disableRoute(id: number): RouteView {
    const row = this.routeRow(id)
    const node = this.t.node(row.nodeId)
    const prefixes = this.rowPrefixes(row)
    this.touchRows(row)
    const approved = this.approved.approveRoutes(node.id, node.approvedRoutes.filter((route) => !prefixes.includes(route)))
    this.failover(row)
    return this.routeView(row, approved)
  }

  /** Deletes a row (both for an exit route) and its approval; a prefix still advertised gets a new row on the next update. */
  deleteRoute(id: number): void {
    const row = this.routeRow(id)
    const node = this.t.node(row.nodeId)
    const prefixes = this.rowPrefixes(row)
    for (const other of [...this.routeRows.values()]) {
      if (other.nodeId === row.nodeId && prefixes.includes(other.prefix)) this.routeRows.delete(other.id)
    }
    this.approved.approveRoutes(node.id, node.approvedRoutes.filter((route) => !prefixes.includes(route)))
  }

  private touchRows(row: RouteRow): void {
    const now = nowIso()
    const prefixes = this.rowPrefixes(row)
    for (const other of this.routeRows.values()) if (other.nodeId === row.nodeId && prefixes.includes(other.prefix)) other.updatedAt = now
  }
}

import { ipv4Of, ipv6Of, type Prefix, parsePrefix, prefixContains } from "../addresses.ts"
import { dnsLabelOf, isDnsLabel, uniqueName } from "../names.ts"
import { MAGIC_DNS_SUFFIX, type TestnetNode } from "../protocol.ts"
import { newDiscoKey, newMachineKey } from "../secrets.ts"
import type { StoredNode } from "../store.ts"
import type { ApprovedRoutes } from "./approved-routes.ts"
import type { RouteRows } from "./route-rows.ts"
import { nowIso, sortedUnique, type Tables, tagsNotPermitted, TestnetFailure } from "./shared.ts"
import { TAGGED_DEVICES_USER, usernameOf, type UsersAndKeys } from "./users.ts"

/**
 * Nodes: registration with a pre-auth key (or a known node key), Hostinfo updates, logout and
 * expiry, names, tags, and who is online (the relay says). Advertised routes are stored on the
 * node; what is approved is the route modules' business (`approved-routes.ts`, `route-rows.ts`),
 * which a stored node is handed to. A node that may no longer use the tailnet is reported to
 * `revoked` (the relay drops it).
 */

export interface HostinfoUpdate {
  readonly nodeKey: string
  readonly hostname?: string | undefined
  readonly advertiseRoutes?: ReadonlyArray<string> | undefined
}

export interface Registration extends HostinfoUpdate {
  readonly hostname: string
  readonly authKey?: string | undefined
  /** tags the node asks for (`--advertise-tags`) */
  readonly advertiseTags?: ReadonlyArray<string> | undefined
}

/** The node number an address in the tailnet's ranges stands for (see ipv4Of and ipv6Of). */
const nodeNumberOf = (address: Uint8Array): number | undefined => {
  if (address.length === 4) {
    if (address[0] !== 100 || (address[1]! & 0xc0) !== 64) return undefined
    return ((address[1]! - 64) << 16) | (address[2]! << 8) | address[3]!
  }
  const ula = [0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0, 0, 0, 0, 0, 0]
  if (!ula.every((byte, i) => address[i] === byte)) return undefined
  return Buffer.from(address).readUInt32BE(12)
}

export class Nodes {
  private readonly t: Tables
  private readonly keys: UsersAndKeys
  private readonly approved: ApprovedRoutes
  private readonly rows: RouteRows
  private readonly revoked: (nodeKey: string) => void

  constructor(tables: Tables, keys: UsersAndKeys, approved: ApprovedRoutes, rows: RouteRows, revoked: (nodeKey: string) => void) {
    this.t = tables
    this.keys = keys
    this.approved = approved
    this.rows = rows
    this.revoked = revoked
  }

  nodeByKey(nodeKey: string): StoredNode | undefined {
    return [...this.t.nodesById.values()].find((node) => node.nodeKey === nodeKey)
  }

  isOnline(node: StoredNode): boolean {
    return this.t.online.has(node.id)
  }

  /** The routes a node serves: advertised and approved (exact match, as Headscale approves). */
  subnetRoutes(node: StoredNode): Array<string> {
    return node.advertisedRoutes.filter((route) => node.approvedRoutes.includes(route))
  }

  /**
   * A known, unexpired node key comes back as its node; anything else needs a usable auth key, and
   * (as from Headscale 0.28) a login with a pre-auth key may not ask for tags: they come from the key.
   */
  register(request: Registration): StoredNode {
    const known = this.nodeByKey(request.nodeKey)
    if (known !== undefined && !this.t.isExpired(known)) return this.update(request)
    const advertisedRoutes = this.checkedRoutes(request.advertiseRoutes ?? known?.advertisedRoutes ?? [])
    const key = this.keys.usableAuthKey(request.authKey, request.nodeKey)
    if (!this.t.isLegacy && known === undefined && (request.advertiseTags ?? []).length > 0) {
      throw new TestnetFailure("internal", `handling register with auth key: creating new node: ${tagsNotPermitted(request.advertiseTags!)}`)
    }
    this.t.preAuthKeys.set(key.id, { ...key, used: true })
    const id = known?.id ?? this.t.nextIds.node++
    const node: StoredNode = {
      id,
      nodeKey: request.nodeKey,
      machineKey: known?.machineKey ?? newMachineKey(),
      discoKey: known?.discoKey ?? newDiscoKey(),
      hostname: request.hostname,
      givenName: known?.renamed === true ? known.givenName : this.givenNameFor(request.hostname, id),
      renamed: known?.renamed ?? false,
      userId: key.userId,
      tags: key.aclTags,
      ephemeral: key.ephemeral,
      advertisedRoutes,
      approvedRoutes: known?.approvedRoutes ?? [],
      preAuthKeyId: key.id,
      createdAt: known?.createdAt ?? nowIso(),
      lastSeen: known?.lastSeen ?? null,
      expiry: null
    }
    return this.approved.seenBySelf(this.storeNode(node))
  }

  /** A running node's new hostname or advertised routes. */
  update(request: HostinfoUpdate): StoredNode {
    const node = this.activeNode(request.nodeKey)
    const hostname = request.hostname ?? node.hostname
    const updated: StoredNode = {
      ...node,
      hostname,
      givenName: node.renamed || hostname === node.hostname ? node.givenName : this.givenNameFor(hostname, node.id),
      advertisedRoutes: request.advertiseRoutes === undefined ? node.advertisedRoutes : this.checkedRoutes(request.advertiseRoutes)
    }
    return this.approved.seenBySelf(this.storeNode(updated))
  }

  /**
   * Stores a node whose advertised routes may have changed: route rows appear for new prefixes,
   * and as in Headscale up to 0.25 a prefix the node no longer advertises loses its approval.
   */
  private storeNode(node: StoredNode): StoredNode {
    const stored = this.t.isLegacy ? { ...node, approvedRoutes: node.approvedRoutes.filter((route) => node.advertisedRoutes.includes(route)) } : node
    this.t.nodesById.set(stored.id, stored)
    this.rows.syncRouteRows(stored)
    this.t.save()
    return stored
  }

  /** An ephemeral node is deleted; any other expires and needs an auth key to come back. Unknown keys are fine. */
  logout(nodeKey: string): void {
    const node = this.nodeByKey(nodeKey)
    if (node === undefined) return
    if (node.ephemeral) this.t.nodesById.delete(node.id)
    else this.t.nodesById.set(node.id, { ...node, expiry: nowIso() })
    this.t.save()
    this.revoked(nodeKey)
  }

  /** A node key's own node and its peers: every other unexpired node. */
  netmap(nodeKey: string): { self: StoredNode; peers: Array<StoredNode> } {
    const node = this.activeNode(nodeKey)
    const self = this.t.isLegacy ? node : this.approved.selfView(node)
    return { self, peers: this.t.nodes().filter((other) => other.id !== node.id && !this.t.isExpired(other)) }
  }

  private activeNode(nodeKey: string): StoredNode {
    const node = this.nodeByKey(nodeKey)
    if (node === undefined) throw new TestnetFailure("not-found", `node key ${nodeKey} is not registered on this tailnet; log in again`)
    if (this.t.isExpired(node)) throw new TestnetFailure("not-found", `the node of ${nodeKey} expired; log in again with an auth key`)
    return node
  }

  /** Advertised routes as the node sent them (Headscale keeps its Hostinfo's order), without repeats. */
  private checkedRoutes(routes: ReadonlyArray<string>): Array<string> {
    for (const route of routes) {
      if (parsePrefix(route) === undefined) throw new TestnetFailure("invalid-argument", `advertised route ${JSON.stringify(route)} is not a CIDR prefix`)
    }
    return [...new Set(routes)]
  }

  private givenNameFor(hostname: string, selfId: number): string {
    const taken = new Set(this.t.nodes().filter((node) => node.id !== selfId).map((node) => node.givenName))
    return uniqueName(dnsLabelOf(hostname), taken)
  }

  deleteNode(id: number): void {
    const node = this.t.node(id)
    this.t.nodesById.delete(id)
    this.approved.forgetNode(id)
    this.rows.forgetNode(id)
    this.t.online.delete(id)
    this.t.save()
    this.revoked(node.nodeKey)
  }

  /** Expires now by default; `expiry` sets another time, `disableExpiry` clears it. */
  expireNode(id: number, options: { expiry?: string | undefined; disableExpiry?: boolean | undefined } = {}): StoredNode {
    const node = this.t.nodeOr(id, "unknown")
    const expired: StoredNode = { ...node, expiry: options.disableExpiry === true ? null : (options.expiry ?? nowIso()) }
    this.t.nodesById.set(id, expired)
    this.t.save()
    if (this.t.isExpired(expired)) this.revoked(node.nodeKey)
    return expired
  }

  renameNode(id: number, newName: string): StoredNode {
    const node = this.t.nodeOr(id, "unknown")
    if (!isDnsLabel(newName)) {
      throw new TestnetFailure("unknown", `invalid node name ${JSON.stringify(newName)}: use a DNS label (lowercase letters, digits and "-", at most 63)`)
    }
    if (this.t.nodes().some((other) => other.id !== id && other.givenName === newName)) {
      throw new TestnetFailure("unknown", `the name ${JSON.stringify(newName)} is already used by another node`)
    }
    const renamed = { ...node, givenName: newName, renamed: true }
    this.t.nodesById.set(id, renamed)
    this.t.save()
    return renamed
  }

  /**
   * Headscale takes only tags its policy defines; the testnet has no policy, so (past the checks
   * of form, and of the node) every tag is refused, as by a Headscale without one. Nodes get tags
   * from their pre-auth key.
   */
  setTags(id: number, tags: ReadonlyArray<string>): StoredNode {
    if (this.t.isLegacy) {
      // 0.25 sets them as forced tags, whatever they are
      this.t.checkTags(tags, "unknown")
      const node = this.t.nodesById.get(id)
      if (node === undefined) throw new TestnetFailure("invalid-argument", "record not found")
      const tagged = { ...node, tags: sortedUnique(tags) }
      this.t.nodesById.set(id, tagged)
      this.t.save()
      return tagged
    }
    if (tags.length === 0) throw new TestnetFailure("invalid-argument", "cannot remove all tags from a node - tagged nodes must have at least one tag")
    this.t.checkTags(tags, "unknown")
    this.t.node(id)
    throw new TestnetFailure("invalid-argument", tagsNotPermitted(tags))
  }

  setOnline(id: number, online: boolean): void {
    const node = this.t.nodesById.get(id)
    if (online) this.t.online.add(id)
    else {
      this.t.online.delete(id)
      this.rows.nodeOffline(id)
    }
    if (node === undefined) return
    this.t.nodesById.set(id, { ...node, lastSeen: nowIso() })
    this.t.save()
  }

  /**
   * The node a packet for `address` goes to: the unexpired node that owns the address, else the
   * online node serving the longest matching approved route.
   */
  destinationNode(address: Uint8Array): StoredNode | undefined {
    const n = nodeNumberOf(address)
    const owner = n === undefined ? undefined : this.t.nodesById.get(n)
    if (owner !== undefined) return this.t.isExpired(owner) ? undefined : owner
    let best: { node: StoredNode; prefix: Prefix } | undefined
    for (const id of this.t.online) {
      const node = this.t.nodesById.get(id)
      if (node === undefined || this.t.isExpired(node)) continue
      for (const route of this.subnetRoutes(node)) {
        const prefix = parsePrefix(route)!
        if (prefixContains(prefix, address) && (best === undefined || prefix.bits > best.prefix.bits)) best = { node, prefix }
      }
    }
    return best?.node
  }

  toTestnetNode(node: StoredNode): TestnetNode {
    const owner = node.tags.length > 0 ? undefined : this.keys.userOfId(node.userId)
    const user = owner === undefined
      ? { ...TAGGED_DEVICES_USER, loginName: TAGGED_DEVICES_USER.name }
      : { id: owner.id, name: owner.name, loginName: usernameOf(owner), displayName: owner.displayName !== "" ? owner.displayName : usernameOf(owner) }
    return {
      id: node.id,
      nodeKey: node.nodeKey,
      name: node.hostname,
      givenName: node.givenName,
      dnsName: `${node.givenName}.${MAGIC_DNS_SUFFIX}.`,
      addresses: [ipv4Of(node.id), ipv6Of(node.id)],
      userId: user.id,
      userName: user.name,
      userLoginName: user.loginName,
      userDisplayName: user.displayName,
      tags: node.tags,
      ephemeral: node.ephemeral,
      online: this.isOnline(node),
      advertisedRoutes: node.advertisedRoutes,
      approvedRoutes: node.approvedRoutes,
      createdAt: node.createdAt,
      lastSeen: node.lastSeen,
      expired: this.t.isExpired(node)
    }
  }
}

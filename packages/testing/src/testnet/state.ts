import { parsePrefixError } from "../tailscaled/ip.ts"
import { ipv4Of, ipv6Of, isExitRoute, type Prefix, parsePrefix, prefixContains } from "./addresses.ts"
import { dnsLabelOf, isDnsLabel, uniqueName } from "./names.ts"
import { MAGIC_DNS_SUFFIX, type TestnetNode } from "./protocol.ts"
import { newApiKey, newAuthKey, newDiscoKey, newMachineKey, sameSecret } from "./secrets.ts"
import type { StoredApiKey, StoredNode, StoredPreAuthKey, StoredState, StoredUser } from "./store.ts"

/**
 * How an operation failed, in Headscale's terms: the /ts and /api layers turn these into HTTP
 * statuses (invalid-argument 400, not-found 404, invalid-key 401, unknown and internal 500).
 */
export type FailureKind = "invalid-argument" | "not-found" | "invalid-key" | "unknown" | "internal"

export class TestnetFailure extends Error {
  readonly kind: FailureKind
  constructor(kind: FailureKind, message: string) {
    super(message)
    this.kind = kind
    this.name = "TestnetFailure"
  }
}

/** The user Headscale 0.28+ shows as the owner of tagged nodes. */
export const TAGGED_DEVICES_USER = { id: 2147455555, name: "tagged-devices", displayName: "Tagged Devices" } as const

/** Headscale's `User.Username()`: the email when there is one, else the name. */
export const usernameOf = (user: { readonly name: string; readonly email: string }) => user.email !== "" ? user.email : user.name

export const DEFAULT_USER = "containerscale"

/** What protojson makes of an omitted Timestamp: Go's zero time, long expired. */
export const ZERO_TIME = "0001-01-01T00:00:00Z"

/**
 * Which Headscale API generation the stand-in imitates: "0.29" (0.26+ shapes: approved routes on
 * the node, `approve_routes`, `/version`) or "0.25" (route rows enabled by id, no `/version`).
 */
export type HeadscaleVersion = "0.29" | "0.25"

export const HEADSCALE_VERSIONS: ReadonlyArray<HeadscaleVersion> = ["0.29", "0.25"]

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

export interface NewPreAuthKey {
  readonly userId: number | undefined
  readonly reusable: boolean
  readonly ephemeral: boolean
  readonly expiration: string
  readonly aclTags: ReadonlyArray<string>
}

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

const nowIso = () => new Date().toISOString()
const isPast = (time: string) => Date.parse(time) <= Date.now()
const sortedUnique = (items: ReadonlyArray<string>) => [...new Set(items)].sort()

/** Headscale's validateTag, in the words of the generation. */
const tagProblem = (tag: string, legacy: boolean): string | undefined => {
  if (!tag.startsWith("tag:")) return "tag must start with the string 'tag:'"
  if (tag.toLowerCase() !== tag) return "tag should be lowercase"
  if (tag.trim().split(/\s+/).length > 1) return legacy ? "tag should not contains space" : "tags must not contain spaces"
  return undefined
}

/** Go's %v of a []string. */
const goList = (items: ReadonlyArray<string>) => `[${items.join(" ")}]`

/** What Headscale says of tags no policy lets a node have (without a policy, every tag). */
const tagsNotPermitted = (tags: ReadonlyArray<string>) => `requested tags ${goList(tags)} are invalid or not permitted`

const nodeGone = (id: number) => `node no longer exists in NodeStore: ${id}`

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

/**
 * The tailnet: users, pre-auth keys, API keys and nodes, with Headscale's rules. Every change is
 * handed to `persist`; which nodes are online is known only while the process runs.
 */
export class TestnetState {
  private readonly users = new Map<number, StoredUser>()
  private readonly preAuthKeys = new Map<number, StoredPreAuthKey>()
  private readonly apiKeys = new Map<number, StoredApiKey>()
  private readonly nodesById = new Map<number, StoredNode>()
  private readonly online = new Set<number>()
  private nextIds: { user: number; preAuthKey: number; apiKey: number; node: number }
  /**
   * Route rows (0.25): kept in memory only. They are rebuilt from the advertised routes when the
   * state is loaded, so their ids may change across a restart (Headscale keeps them in its database).
   */
  private readonly routeRows = new Map<number, RouteRow>()
  private nextRouteId = 1
  /**
   * The approved routes each node was last told about itself (0.26+). Headscale 0.29 sends a node
   * its own approved routes only in the answer to the node's next map request (a login, or a new
   * Hostinfo); its peers learn them at once.
   */
  private readonly selfViews = new Map<number, ReadonlyArray<string>>()
  readonly headscaleVersion: HeadscaleVersion
  /** Called when a node may no longer use the tailnet (deleted, logged out, expired). */
  onNodeRevoked: (nodeKey: string) => void = () => {}

  private readonly persist: (state: StoredState) => void

  constructor(saved: StoredState | undefined, persist: (state: StoredState) => void, options: { readonly headscaleVersion?: HeadscaleVersion | undefined } = {}) {
    this.persist = persist
    this.headscaleVersion = options.headscaleVersion ?? "0.29"
    this.nextIds = saved?.nextIds !== undefined ? { ...saved.nextIds } : { user: 1, preAuthKey: 1, apiKey: 1, node: 1 }
    for (const user of saved?.users ?? []) this.users.set(user.id, user)
    for (const key of saved?.preAuthKeys ?? []) this.preAuthKeys.set(key.id, key)
    for (const key of saved?.apiKeys ?? []) this.apiKeys.set(key.id, key)
    for (const node of saved?.nodes ?? []) this.nodesById.set(node.id, node)
    for (const node of [...this.nodesById.values()].sort((a, b) => a.id - b.id)) this.syncRouteRows(node)
    for (const row of this.routeRows.values()) {
      if (isExitRoute(row.prefix) || !this.rowEnabled(row)) continue
      if (![...this.routeRows.values()].some((other) => other.prefix === row.prefix && other.primary)) row.primary = true
    }
    if (this.userByName(DEFAULT_USER) === undefined) this.createUser({ name: DEFAULT_USER })
  }

  get isLegacy(): boolean {
    return this.headscaleVersion === "0.25"
  }

  snapshot(): StoredState {
    return {
      version: 1,
      nextIds: { ...this.nextIds },
      users: [...this.users.values()],
      preAuthKeys: [...this.preAuthKeys.values()],
      apiKeys: [...this.apiKeys.values()],
      nodes: [...this.nodesById.values()]
    }
  }

  private save() {
    this.persist(this.snapshot())
  }

  // Users

  listUsers(filter: { id?: number | undefined; name?: string | undefined; email?: string | undefined } = {}): Array<StoredUser> {
    return [...this.users.values()].filter((user) => {
      if (filter.name !== undefined && filter.name !== "") return user.name === filter.name
      if (filter.email !== undefined && filter.email !== "") return user.email === filter.email
      if (filter.id !== undefined && filter.id !== 0) return user.id === filter.id
      return true
    })
  }

  userByName(name: string): StoredUser | undefined {
    return [...this.users.values()].find((user) => user.name === name)
  }

  private userById(id: number): StoredUser {
    const user = this.users.get(id)
    if (user === undefined) throw new TestnetFailure("unknown", "user not found")
    return user
  }

  createUser(input: { name: string; displayName?: string | undefined; email?: string | undefined; pictureUrl?: string | undefined }): StoredUser {
    if (input.name.trim() === "") throw new TestnetFailure("internal", "failed to create user: the name must not be empty")
    if (this.userByName(input.name) !== undefined) {
      const unique = "constraint failed: UNIQUE constraint failed: users.name (2067)"
      throw this.isLegacy ? new TestnetFailure("unknown", `creating user: ${unique}`) : new TestnetFailure("internal", `creating user: creating user: ${unique}`)
    }
    const user: StoredUser = {
      id: this.nextIds.user++,
      name: input.name,
      displayName: input.displayName ?? "",
      email: input.email ?? "",
      profilePicUrl: input.pictureUrl ?? "",
      createdAt: nowIso()
    }
    this.users.set(user.id, user)
    this.save()
    return user
  }

  renameUser(id: number, newName: string): StoredUser {
    const user = this.userById(id)
    const other = this.userByName(newName)
    if (other !== undefined && other.id !== id) throw new TestnetFailure("unknown", `a user named ${JSON.stringify(newName)} already exists`)
    if (newName.trim() === "") throw new TestnetFailure("unknown", "the new user name must not be empty")
    const renamed = { ...user, name: newName }
    this.users.set(id, renamed)
    this.save()
    return renamed
  }

  /** Refused while the user owns nodes; the user's pre-auth keys go with it. */
  deleteUser(id: number): void {
    const user = this.userById(id)
    const owned = [...this.nodesById.values()].filter((node) => node.userId === id)
    if (owned.length > 0) {
      throw new TestnetFailure("unknown", `user ${JSON.stringify(user.name)} still owns nodes ${owned.map((n) => n.id).join(", ")}; delete them first`)
    }
    for (const key of this.preAuthKeys.values()) if (key.userId === id) this.preAuthKeys.delete(key.id)
    this.users.delete(id)
    this.save()
  }

  userOfId(id: number | null): StoredUser | undefined {
    return id === null ? undefined : this.users.get(id)
  }

  // Pre-auth keys

  createPreAuthKey(input: NewPreAuthKey): StoredPreAuthKey {
    this.checkTags(input.aclTags, "invalid-argument")
    if (input.userId === undefined && input.aclTags.length === 0) {
      throw new TestnetFailure("invalid-argument", "a pre-auth key needs a user or at least one ACL tag")
    }
    if (input.userId !== undefined) this.userById(input.userId)
    const { key, prefix } = newAuthKey()
    const stored: StoredPreAuthKey = {
      id: this.nextIds.preAuthKey++,
      prefix,
      key,
      userId: input.userId ?? null,
      reusable: input.reusable,
      ephemeral: input.ephemeral,
      used: false,
      expiration: input.expiration,
      createdAt: nowIso(),
      aclTags: sortedUnique(input.aclTags)
    }
    this.preAuthKeys.set(stored.id, stored)
    this.save()
    return stored
  }

  listPreAuthKeys(): Array<StoredPreAuthKey> {
    return [...this.preAuthKeys.values()]
  }

  preAuthKeyById(id: number | null): StoredPreAuthKey | undefined {
    return id === null ? undefined : this.preAuthKeys.get(id)
  }

  /** A key by its full value (the 0.25 API names keys by value). */
  preAuthKeyByValue(value: string): StoredPreAuthKey | undefined {
    return [...this.preAuthKeys.values()].find((candidate) => sameSecret(candidate.key, value))
  }

  /** Like Headscale up to 0.29, an unknown id is not an error. */
  expirePreAuthKey(id: number): void {
    const key = this.preAuthKeys.get(id)
    if (key === undefined) return
    this.preAuthKeys.set(id, { ...key, expiration: nowIso() })
    this.save()
  }

  deletePreAuthKey(id: number): void {
    if (this.preAuthKeys.delete(id)) this.save()
  }

  private checkTags(tags: ReadonlyArray<string>, kind: FailureKind): void {
    for (const tag of tags) {
      const problem = tagProblem(tag, this.isLegacy)
      if (problem !== undefined) throw new TestnetFailure(kind, problem)
    }
  }

  /** Headscale's refusals of a pre-auth key, word for word: tailscaled shows them as `ErrMessage`. */
  private usableAuthKey(authKey: string | undefined, nodeKey: string): StoredPreAuthKey {
    if (authKey === undefined || authKey === "") {
      throw new TestnetFailure("invalid-key", `node key ${nodeKey} is not registered (or its node expired), so it needs an auth key (the testnet has no interactive login)`)
    }
    const key = [...this.preAuthKeys.values()].find((candidate) => sameSecret(candidate.key, authKey))
    if (key === undefined) throw new TestnetFailure("invalid-key", "invalid pre auth key")
    if (isPast(key.expiration)) throw new TestnetFailure("invalid-key", "authkey expired")
    if (!key.reusable && key.used) throw new TestnetFailure("invalid-key", "authkey already used")
    return key
  }

  // API keys

  createApiKey(expiration: string, bootstrap = false): string {
    const { key, prefix } = newApiKey()
    const stored: StoredApiKey = { id: this.nextIds.apiKey++, prefix, key, expiration, createdAt: nowIso(), lastSeen: null, bootstrap }
    this.apiKeys.set(stored.id, stored)
    this.save()
    return key
  }

  listApiKeys(): Array<StoredApiKey> {
    return [...this.apiKeys.values()]
  }

  /** The key the testnet hands out: the bootstrap key, replaced when it expired or was deleted. */
  bootstrapApiKey(): string {
    const current = [...this.apiKeys.values()].find((key) => key.bootstrap && !isPast(key.expiration))
    if (current !== undefined) return current.key
    const tenYears = new Date(Date.now() + 10 * 365 * 24 * 3600_000).toISOString()
    return this.createApiKey(tenYears, true)
  }

  /** By id, or by prefix in any form Headscale takes: `<prefix>`, `hskey-api-<prefix>` or `hskey-api-<prefix>-***`. */
  private apiKeyBy(selector: { id?: number | undefined; prefix?: string | undefined }): StoredApiKey {
    const prefix = selector.prefix?.startsWith("hskey-api-") === true ? selector.prefix.slice("hskey-api-".length, "hskey-api-".length + 12) : selector.prefix
    const key = [...this.apiKeys.values()].find((k) => (selector.id !== undefined && selector.id !== 0 ? k.id === selector.id : k.prefix === prefix))
    if (key === undefined) throw new TestnetFailure("unknown", "record not found")
    return key
  }

  expireApiKey(selector: { id?: number | undefined; prefix?: string | undefined }): void {
    const key = this.apiKeyBy(selector)
    this.apiKeys.set(key.id, { ...key, expiration: nowIso() })
    this.save()
  }

  deleteApiKey(prefix: string): void {
    this.apiKeys.delete(this.apiKeyBy({ prefix }).id)
    this.save()
  }

  /**
   * Checks a bearer token (`hskey-api-<prefix>-<secret>` or legacy `<prefix>.<secret>`): `expired`
   * for a known key past its expiration, `invalid` for anything that does not validate.
   */
  authenticate(token: string): "valid" | "expired" | "invalid" {
    const prefix = /^hskey-api-([A-Za-z0-9]{12})-/.exec(token)?.[1] ?? /^([^.]+)\./.exec(token)?.[1]
    const key = [...this.apiKeys.values()].find((k) => k.prefix === prefix)
    if (key === undefined) return "invalid"
    const matches = token.startsWith("hskey-api-") ? sameSecret(key.key, token) : sameSecret(key.key.slice(`hskey-api-${key.prefix}-`.length), token.slice(prefix!.length + 1))
    if (!matches) return "invalid"
    if (isPast(key.expiration)) return "expired"
    this.apiKeys.set(key.id, { ...key, lastSeen: nowIso() })
    return "valid"
  }

  // Nodes

  nodes(): Array<StoredNode> {
    return [...this.nodesById.values()]
  }

  node(id: number): StoredNode {
    const node = this.nodesById.get(id)
    if (node === undefined) throw new TestnetFailure("not-found", "node not found")
    return node
  }

  nodeByKey(nodeKey: string): StoredNode | undefined {
    return [...this.nodesById.values()].find((node) => node.nodeKey === nodeKey)
  }

  isExpired(node: StoredNode): boolean {
    return node.expiry !== null && isPast(node.expiry)
  }

  isOnline(node: StoredNode): boolean {
    return this.online.has(node.id)
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
    if (known !== undefined && !this.isExpired(known)) return this.update(request)
    const advertisedRoutes = this.checkedRoutes(request.advertiseRoutes ?? known?.advertisedRoutes ?? [])
    const key = this.usableAuthKey(request.authKey, request.nodeKey)
    if (!this.isLegacy && known === undefined && (request.advertiseTags ?? []).length > 0) {
      throw new TestnetFailure("internal", `handling register with auth key: creating new node: ${tagsNotPermitted(request.advertiseTags!)}`)
    }
    this.preAuthKeys.set(key.id, { ...key, used: true })
    const id = known?.id ?? this.nextIds.node++
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
    return this.seenBySelf(this.storeNode(node))
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
    return this.seenBySelf(this.storeNode(updated))
  }

  private seenBySelf(node: StoredNode): StoredNode {
    this.selfViews.set(node.id, node.approvedRoutes)
    return node
  }

  /**
   * Stores a node whose advertised routes may have changed: route rows appear for new prefixes,
   * and as in Headscale up to 0.25 a prefix the node no longer advertises loses its approval.
   */
  private storeNode(node: StoredNode): StoredNode {
    const stored = this.isLegacy ? { ...node, approvedRoutes: node.approvedRoutes.filter((route) => node.advertisedRoutes.includes(route)) } : node
    this.nodesById.set(stored.id, stored)
    this.syncRouteRows(stored)
    this.save()
    return stored
  }

  /** An ephemeral node is deleted; any other expires and needs an auth key to come back. Unknown keys are fine. */
  logout(nodeKey: string): void {
    const node = this.nodeByKey(nodeKey)
    if (node === undefined) return
    if (node.ephemeral) this.nodesById.delete(node.id)
    else this.nodesById.set(node.id, { ...node, expiry: nowIso() })
    this.save()
    this.onNodeRevoked(nodeKey)
  }

  /** A node key's own node and its peers: every other unexpired node. */
  netmap(nodeKey: string): { self: StoredNode; peers: Array<StoredNode> } {
    const node = this.activeNode(nodeKey)
    const self = this.isLegacy ? node : { ...node, approvedRoutes: this.selfViews.get(node.id) ?? node.approvedRoutes }
    return { self, peers: this.nodes().filter((other) => other.id !== node.id && !this.isExpired(other)) }
  }

  private activeNode(nodeKey: string): StoredNode {
    const node = this.nodeByKey(nodeKey)
    if (node === undefined) throw new TestnetFailure("not-found", `node key ${nodeKey} is not registered on this tailnet; log in again`)
    if (this.isExpired(node)) throw new TestnetFailure("not-found", `the node of ${nodeKey} expired; log in again with an auth key`)
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
    const taken = new Set(this.nodes().filter((node) => node.id !== selfId).map((node) => node.givenName))
    return uniqueName(dnsLabelOf(hostname), taken)
  }

  deleteNode(id: number): void {
    const node = this.node(id)
    this.nodesById.delete(id)
    this.selfViews.delete(id)
    for (const row of this.routeRows.values()) if (row.nodeId === id) this.routeRows.delete(row.id)
    this.online.delete(id)
    this.save()
    this.onNodeRevoked(node.nodeKey)
  }

  /** Expires now by default; `expiry` sets another time, `disableExpiry` clears it. */
  expireNode(id: number, options: { expiry?: string | undefined; disableExpiry?: boolean | undefined } = {}): StoredNode {
    const node = this.nodeOr(id, "unknown")
    const expired: StoredNode = { ...node, expiry: options.disableExpiry === true ? null : (options.expiry ?? nowIso()) }
    this.nodesById.set(id, expired)
    this.save()
    if (this.isExpired(expired)) this.onNodeRevoked(node.nodeKey)
    return expired
  }

  renameNode(id: number, newName: string): StoredNode {
    const node = this.nodeOr(id, "unknown")
    if (!isDnsLabel(newName)) {
      throw new TestnetFailure("unknown", `invalid node name ${JSON.stringify(newName)}: use a DNS label (lowercase letters, digits and "-", at most 63)`)
    }
    if (this.nodes().some((other) => other.id !== id && other.givenName === newName)) {
      throw new TestnetFailure("unknown", `the name ${JSON.stringify(newName)} is already used by another node`)
    }
    const renamed = { ...node, givenName: newName, renamed: true }
    this.nodesById.set(id, renamed)
    this.save()
    return renamed
  }

  /** The node, or Headscale's error for a call that finds it gone (not a 404 for these calls). */
  private nodeOr(id: number, kind: FailureKind): StoredNode {
    const node = this.nodesById.get(id)
    if (node === undefined) throw new TestnetFailure(this.isLegacy ? "not-found" : kind, this.isLegacy ? "record not found" : nodeGone(id))
    return node
  }

  /**
   * Headscale takes only tags its policy defines; the testnet has no policy, so (past the checks
   * of form, and of the node) every tag is refused, as by a Headscale without one. Nodes get tags
   * from their pre-auth key.
   */
  setTags(id: number, tags: ReadonlyArray<string>): StoredNode {
    if (this.isLegacy) {
      // 0.25 sets them as forced tags, whatever they are
      this.checkTags(tags, "unknown")
      const node = this.nodesById.get(id)
      if (node === undefined) throw new TestnetFailure("invalid-argument", "record not found")
      const tagged = { ...node, tags: sortedUnique(tags) }
      this.nodesById.set(id, tagged)
      this.save()
      return tagged
    }
    if (tags.length === 0) throw new TestnetFailure("invalid-argument", "cannot remove all tags from a node - tagged nodes must have at least one tag")
    this.checkTags(tags, "unknown")
    this.node(id)
    throw new TestnetFailure("invalid-argument", tagsNotPermitted(tags))
  }

  /** Replaces the approved set; approving either exit route approves both. */
  approveRoutes(id: number, routes: ReadonlyArray<string>): StoredNode {
    const expanded: Array<string> = []
    for (const route of routes) {
      const problem = parsePrefixError(route)
      if (problem !== undefined || parsePrefix(route) === undefined) throw new TestnetFailure("unknown", `parsing route: ${problem ?? `netip.ParsePrefix(${JSON.stringify(route)}): invalid prefix`}`)
      expanded.push(...(isExitRoute(route) ? ["0.0.0.0/0", "::/0"] : [route]))
    }
    const node = this.nodeOr(id, "invalid-argument")
    const approved = { ...node, approvedRoutes: sortPrefixes(expanded) }
    this.nodesById.set(id, approved)
    this.save()
    return approved
  }

  // Route rows (the API of Headscale up to 0.25)

  /** Adds a row for each newly advertised prefix and notes advertised-state changes. */
  private syncRouteRows(node: StoredNode): void {
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
    if (nodeId !== undefined) this.node(nodeId)
    return [...this.routeRows.values()]
      .filter((row) => nodeId === undefined || row.nodeId === nodeId)
      .sort((a, b) => a.id - b.id)
      .flatMap((row) => {
        const node = this.nodesById.get(row.nodeId)
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
    const node = this.nodesById.get(row.nodeId)
    return node !== undefined && node.advertisedRoutes.includes(row.prefix) && node.approvedRoutes.includes(row.prefix)
  }

  /** Moves a primary row's role to an enabled row of the same prefix on an online node, if there is one. */
  private failover(row: RouteRow): void {
    if (!row.primary) return
    const next = [...this.routeRows.values()]
      .sort((a, b) => a.id - b.id)
      .find((other) => other.id !== row.id && other.prefix === row.prefix && this.rowEnabled(other) && this.online.has(other.nodeId))
    if (next === undefined) return
    row.primary = false
    next.primary = true
  }

  private routeRow(id: number): RouteRow {
    const row = this.routeRows.get(id)
    if (row === undefined || !this.nodesById.has(row.nodeId)) throw new TestnetFailure("not-found", "route not found")
    return row
  }

  /** The prefixes an action on a row acts on: both exit routes for either one. */
  private rowPrefixes(row: RouteRow): Array<string> {
    return isExitRoute(row.prefix) ? ["0.0.0.0/0", "::/0"] : [row.prefix]
  }

  /** Enables a row: its prefix joins the node's approved set; it must be advertised (both, for an exit route). */
  enableRoute(id: number): RouteView {
    const row = this.routeRow(id)
    const node = this.node(row.nodeId)
    for (const prefix of this.rowPrefixes(row)) {
      if (!node.advertisedRoutes.includes(prefix)) {
        throw new TestnetFailure("unknown", `route (${prefix}) is not available on node ${node.hostname}: route is not available on node`)
      }
    }
    this.touchRows(row)
    const approved = this.approveRoutes(node.id, [...node.approvedRoutes, row.prefix])
    if (!isExitRoute(row.prefix) && ![...this.routeRows.values()].some((other) => other.prefix === row.prefix && other.primary)) row.primary = true
    return this.routeView(row, approved)
  }

  disableRoute(id: number): RouteView {
    const row = this.routeRow(id)
    const node = this.node(row.nodeId)
    const prefixes = this.rowPrefixes(row)
    this.touchRows(row)
    const approved = this.approveRoutes(node.id, node.approvedRoutes.filter((route) => !prefixes.includes(route)))
    this.failover(row)
    return this.routeView(row, approved)
  }

  /** Deletes a row (both for an exit route) and its approval; a prefix still advertised gets a new row on the next update. */
  deleteRoute(id: number): void {
    const row = this.routeRow(id)
    const node = this.node(row.nodeId)
    const prefixes = this.rowPrefixes(row)
    for (const other of [...this.routeRows.values()]) {
      if (other.nodeId === row.nodeId && prefixes.includes(other.prefix)) this.routeRows.delete(other.id)
    }
    this.approveRoutes(node.id, node.approvedRoutes.filter((route) => !prefixes.includes(route)))
  }

  private touchRows(row: RouteRow): void {
    const now = nowIso()
    const prefixes = this.rowPrefixes(row)
    for (const other of this.routeRows.values()) if (other.nodeId === row.nodeId && prefixes.includes(other.prefix)) other.updatedAt = now
  }

  // Relay

  setOnline(id: number, online: boolean): void {
    const node = this.nodesById.get(id)
    if (online) this.online.add(id)
    else {
      this.online.delete(id)
      for (const row of this.routeRows.values()) if (row.nodeId === id) this.failover(row)
    }
    if (node === undefined) return
    this.nodesById.set(id, { ...node, lastSeen: nowIso() })
    this.save()
  }

  /**
   * The node a packet for `address` goes to: the unexpired node that owns the address, else the
   * online node serving the longest matching approved route.
   */
  destinationNode(address: Uint8Array): StoredNode | undefined {
    const n = nodeNumberOf(address)
    const owner = n === undefined ? undefined : this.nodesById.get(n)
    if (owner !== undefined) return this.isExpired(owner) ? undefined : owner
    let best: { node: StoredNode; prefix: Prefix } | undefined
    for (const id of this.online) {
      const node = this.nodesById.get(id)
      if (node === undefined || this.isExpired(node)) continue
      for (const route of this.subnetRoutes(node)) {
        const prefix = parsePrefix(route)!
        if (prefixContains(prefix, address) && (best === undefined || prefix.bits > best.prefix.bits)) best = { node, prefix }
      }
    }
    return best?.node
  }

  // The protocol's view of a node

  toTestnetNode(node: StoredNode): TestnetNode {
    const owner = node.tags.length > 0 ? undefined : this.userOfId(node.userId)
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
      expired: this.isExpired(node)
    }
  }
}

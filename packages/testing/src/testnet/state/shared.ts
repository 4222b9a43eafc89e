import type { StoredApiKey, StoredNode, StoredPreAuthKey, StoredState, StoredUser } from "../store.ts"

/**
 * What every part of the stand-in's state shares: Headscale's failure kinds and words, the
 * generation imitated, and the tables themselves (users, keys, nodes, the next ids), which are
 * persisted as one snapshot on every change. Which nodes are online is known only while the
 * process runs.
 */

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

/**
 * Which Headscale API generation the stand-in imitates: "0.29" (0.26+ shapes: approved routes on
 * the node, `approve_routes`, `/version`) or "0.25" (route rows enabled by id, no `/version`).
 */
export type HeadscaleVersion = "0.29" | "0.25"

export const HEADSCALE_VERSIONS: ReadonlyArray<HeadscaleVersion> = ["0.29", "0.25"]

/** What protojson makes of an omitted Timestamp: Go's zero time, long expired. */
export const ZERO_TIME = "0001-01-01T00:00:00Z"

export const nowIso = () => new Date().toISOString()
export const isPast = (time: string) => Date.parse(time) <= Date.now()
export const sortedUnique = (items: ReadonlyArray<string>) => [...new Set(items)].sort()

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
export const tagsNotPermitted = (tags: ReadonlyArray<string>) => `requested tags ${goList(tags)} are invalid or not permitted`

const nodeGone = (id: number) => `node no longer exists in NodeStore: ${id}`

/** The tailnet's tables, with the lookups every part needs. */
export class Tables {
  readonly users = new Map<number, StoredUser>()
  readonly preAuthKeys = new Map<number, StoredPreAuthKey>()
  readonly apiKeys = new Map<number, StoredApiKey>()
  readonly nodesById = new Map<number, StoredNode>()
  readonly online = new Set<number>()
  readonly nextIds: { user: number; preAuthKey: number; apiKey: number; node: number }
  readonly headscaleVersion: HeadscaleVersion
  private readonly persist: (state: StoredState) => void

  constructor(saved: StoredState | undefined, persist: (state: StoredState) => void, headscaleVersion: HeadscaleVersion) {
    this.persist = persist
    this.headscaleVersion = headscaleVersion
    this.nextIds = saved?.nextIds !== undefined ? { ...saved.nextIds } : { user: 1, preAuthKey: 1, apiKey: 1, node: 1 }
    for (const user of saved?.users ?? []) this.users.set(user.id, user)
    for (const key of saved?.preAuthKeys ?? []) this.preAuthKeys.set(key.id, key)
    for (const key of saved?.apiKeys ?? []) this.apiKeys.set(key.id, key)
    for (const node of saved?.nodes ?? []) this.nodesById.set(node.id, node)
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

  save(): void {
    this.persist(this.snapshot())
  }

  nodes(): Array<StoredNode> {
    return [...this.nodesById.values()]
  }

  node(id: number): StoredNode {
    const node = this.nodesById.get(id)
    if (node === undefined) throw new TestnetFailure("not-found", "node not found")
    return node
  }

  /** The node, or Headscale's error for a call that finds it gone (not a 404 for these calls). */
  nodeOr(id: number, kind: FailureKind): StoredNode {
    const node = this.nodesById.get(id)
    if (node === undefined) throw new TestnetFailure(this.isLegacy ? "not-found" : kind, this.isLegacy ? "record not found" : nodeGone(id))
    return node
  }

  isExpired(node: StoredNode): boolean {
    return node.expiry !== null && isPast(node.expiry)
  }

  checkTags(tags: ReadonlyArray<string>, kind: FailureKind): void {
    for (const tag of tags) {
      const problem = tagProblem(tag, this.isLegacy)
      if (problem !== undefined) throw new TestnetFailure(kind, problem)
    }
  }
}

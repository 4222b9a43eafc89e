import { newApiKey, newAuthKey, sameSecret } from "../secrets.ts"
import type { StoredApiKey, StoredPreAuthKey, StoredUser } from "../store.ts"
import { isPast, nowIso, sortedUnique, type Tables, TestnetFailure } from "./shared.ts"

/**
 * Users, pre-auth keys and API keys, with Headscale's rules and words: a user that owns nodes
 * cannot be deleted, a pre-auth key needs a user or a tag and is refused word for word as
 * Headscale refuses it (tailscaled shows that as `ErrMessage`), API keys validate in both the
 * `hskey-api-` and the legacy `<prefix>.<secret>` form.
 */

/** The user Headscale 0.28+ shows as the owner of tagged nodes. */
export const TAGGED_DEVICES_USER = { id: 2147455555, name: "tagged-devices", displayName: "Tagged Devices" } as const

/** Headscale's `User.Username()`: the email when there is one, else the name. */
export const usernameOf = (user: { readonly name: string; readonly email: string }) => user.email !== "" ? user.email : user.name

export const DEFAULT_USER = "containerscale"

export interface NewPreAuthKey {
  readonly userId: number | undefined
  readonly reusable: boolean
  readonly ephemeral: boolean
  readonly expiration: string
  readonly aclTags: ReadonlyArray<string>
}

export class UsersAndKeys {
  private readonly t: Tables

  constructor(tables: Tables) {
    this.t = tables
  }

  // Users

  listUsers(filter: { id?: number | undefined; name?: string | undefined; email?: string | undefined } = {}): Array<StoredUser> {
    return [...this.t.users.values()].filter((user) => {
      if (filter.name !== undefined && filter.name !== "") return user.name === filter.name
      if (filter.email !== undefined && filter.email !== "") return user.email === filter.email
      if (filter.id !== undefined && filter.id !== 0) return user.id === filter.id
      return true
    })
  }

  userByName(name: string): StoredUser | undefined {
    return [...this.t.users.values()].find((user) => user.name === name)
  }

  private userById(id: number): StoredUser {
    const user = this.t.users.get(id)
    if (user === undefined) throw new TestnetFailure("unknown", "user not found")
    return user
  }

  createUser(input: { name: string; displayName?: string | undefined; email?: string | undefined; pictureUrl?: string | undefined }): StoredUser {
    if (input.name.trim() === "") throw new TestnetFailure("internal", "failed to create user: the name must not be empty")
    if (this.userByName(input.name) !== undefined) {
      const unique = "constraint failed: UNIQUE constraint failed: users.name (2067)"
      throw this.t.isLegacy ? new TestnetFailure("unknown", `creating user: ${unique}`) : new TestnetFailure("internal", `creating user: creating user: ${unique}`)
    }
    const user: StoredUser = {
      id: this.t.nextIds.user++,
      name: input.name,
      displayName: input.displayName ?? "",
      email: input.email ?? "",
      profilePicUrl: input.pictureUrl ?? "",
      createdAt: nowIso()
    }
    this.t.users.set(user.id, user)
    this.t.save()
    return user
  }

  renameUser(id: number, newName: string): StoredUser {
    const user = this.userById(id)
    const other = this.userByName(newName)
    if (other !== undefined && other.id !== id) throw new TestnetFailure("unknown", `a user named ${JSON.stringify(newName)} already exists`)
    if (newName.trim() === "") throw new TestnetFailure("unknown", "the new user name must not be empty")
    const renamed = { ...user, name: newName }
    this.t.users.set(id, renamed)
    this.t.save()
    return renamed
  }

  /** Refused while the user owns nodes; the user's pre-auth keys go with it. */
  deleteUser(id: number): void {
    const user = this.userById(id)
    const owned = [...this.t.nodesById.values()].filter((node) => node.userId === id)
    if (owned.length > 0) {
      throw new TestnetFailure("unknown", `user ${JSON.stringify(user.name)} still owns nodes ${owned.map((n) => n.id).join(", ")}; delete them first`)
    }
    for (const key of this.t.preAuthKeys.values()) if (key.userId === id) this.t.preAuthKeys.delete(key.id)
    this.t.users.delete(id)
    this.t.save()
  }

  userOfId(id: number | null): StoredUser | undefined {
    return id === null ? undefined : this.t.users.get(id)
  }

  // Pre-auth keys

  createPreAuthKey(input: NewPreAuthKey): StoredPreAuthKey {
    this.t.checkTags(input.aclTags, "invalid-argument")
    if (input.userId === undefined && input.aclTags.length === 0) {
      throw new TestnetFailure("invalid-argument", "a pre-auth key needs a user or at least one ACL tag")
    }
    if (input.userId !== undefined) this.userById(input.userId)
    const { key, prefix } = newAuthKey()
    const stored: StoredPreAuthKey = {
      id: this.t.nextIds.preAuthKey++,
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
    this.t.preAuthKeys.set(stored.id, stored)
    this.t.save()
    return stored
  }

  listPreAuthKeys(): Array<StoredPreAuthKey> {
    return [...this.t.preAuthKeys.values()]
  }

  preAuthKeyById(id: number | null): StoredPreAuthKey | undefined {
    return id === null ? undefined : this.t.preAuthKeys.get(id)
  }

  /** A key by its full value (the 0.25 API names keys by value). */
  preAuthKeyByValue(value: string): StoredPreAuthKey | undefined {
    return [...this.t.preAuthKeys.values()].find((candidate) => sameSecret(candidate.key, value))
  }

  /** Like Headscale up to 0.29, an unknown id is not an error. */
  expirePreAuthKey(id: number): void {
    const key = this.t.preAuthKeys.get(id)
    if (key === undefined) return
    this.t.preAuthKeys.set(id, { ...key, expiration: nowIso() })
    this.t.save()
  }

  deletePreAuthKey(id: number): void {
    if (this.t.preAuthKeys.delete(id)) this.t.save()
  }

  /** Headscale's refusals of a pre-auth key, word for word: tailscaled shows them as `ErrMessage`. */
  usableAuthKey(authKey: string | undefined, nodeKey: string): StoredPreAuthKey {
    if (authKey === undefined || authKey === "") {
      throw new TestnetFailure("invalid-key", `node key ${nodeKey} is not registered (or its node expired), so it needs an auth key (the testnet has no interactive login)`)
    }
    const key = [...this.t.preAuthKeys.values()].find((candidate) => sameSecret(candidate.key, authKey))
    if (key === undefined) throw new TestnetFailure("invalid-key", "invalid pre auth key")
    if (isPast(key.expiration)) throw new TestnetFailure("invalid-key", "authkey expired")
    if (!key.reusable && key.used) throw new TestnetFailure("invalid-key", "authkey already used")
    return key
  }

  // API keys

  createApiKey(expiration: string, bootstrap = false): string {
    const { key, prefix } = newApiKey()
    const stored: StoredApiKey = { id: this.t.nextIds.apiKey++, prefix, key, expiration, createdAt: nowIso(), lastSeen: null, bootstrap }
    this.t.apiKeys.set(stored.id, stored)
    this.t.save()
    return key
  }

  listApiKeys(): Array<StoredApiKey> {
    return [...this.t.apiKeys.values()]
  }

  /** The key the testnet hands out: the bootstrap key, replaced when it expired or was deleted. */
  bootstrapApiKey(): string {
    const current = [...this.t.apiKeys.values()].find((key) => key.bootstrap && !isPast(key.expiration))
    if (current !== undefined) return current.key
    const tenYears = new Date(Date.now() + 10 * 365 * 24 * 3600_000).toISOString()
    return this.createApiKey(tenYears, true)
  }

  /** By id, or by prefix in any form Headscale takes: `<prefix>`, `hskey-api-<prefix>` or `hskey-api-<prefix>-***`. */
  private apiKeyBy(selector: { id?: number | undefined; prefix?: string | undefined }): StoredApiKey {
    const prefix = selector.prefix?.startsWith("hskey-api-") === true ? selector.prefix.slice("hskey-api-".length, "hskey-api-".length + 12) : selector.prefix
    const key = [...this.t.apiKeys.values()].find((k) => (selector.id !== undefined && selector.id !== 0 ? k.id === selector.id : k.prefix === prefix))
    if (key === undefined) throw new TestnetFailure("unknown", "record not found")
    return key
  }

  expireApiKey(selector: { id?: number | undefined; prefix?: string | undefined }): void {
    const key = this.apiKeyBy(selector)
    this.t.apiKeys.set(key.id, { ...key, expiration: nowIso() })
    this.t.save()
  }

  deleteApiKey(prefix: string): void {
    this.t.apiKeys.delete(this.apiKeyBy({ prefix }).id)
    this.t.save()
  }

  /**
   * Checks a bearer token (`hskey-api-<prefix>-<secret>` or legacy `<prefix>.<secret>`): `expired`
   * for a known key past its expiration, `invalid` for anything that does not validate.
   */
  authenticate(token: string): "valid" | "expired" | "invalid" {
    const prefix = /^hskey-api-([A-Za-z0-9]{12})-/.exec(token)?.[1] ?? /^([^.]+)\./.exec(token)?.[1]
    const key = [...this.t.apiKeys.values()].find((k) => k.prefix === prefix)
    if (key === undefined) return "invalid"
    const matches = token.startsWith("hskey-api-") ? sameSecret(key.key, token) : sameSecret(key.key.slice(`hskey-api-${key.prefix}-`.length), token.slice(prefix!.length + 1))
    if (!matches) return "invalid"
    if (isPast(key.expiration)) return "expired"
    this.t.apiKeys.set(key.id, { ...key, lastSeen: nowIso() })
    return "valid"
  }

}

import type { Duration, Effect, Redacted } from "effect"
import type { ControlPlaneError } from "./errors.ts"

/**
 * The Headscale client's public shapes: its options, what it answers in either API generation's
 * terms, and the client itself. Types only; `Headscale.ts` re-exports them.
 */

/** "0.26+": approved routes on the node (`approve_routes`). "legacy" (≤0.25): route rows enabled by id. */
export type HeadscaleGeneration = "0.26+" | "legacy"

export interface HeadscaleServerVersion {
  /** what `GET /version` reports (0.27+); undefined when the server has none (0.26 and ≤0.25) */
  readonly version: string | undefined
  readonly generation: HeadscaleGeneration
}

export interface HeadscaleOptions {
  /** the server's base URL, e.g. `https://headscale.example.com` (the API is under `/api/v1`) */
  readonly url: string
  /** a Headscale API key (`headscale apikeys create`) */
  readonly apiKey: Redacted.Redacted<string>
  /** bound on every HTTP exchange; default 10 seconds */
  readonly timeout?: Duration.Input | undefined
}

export interface HeadscaleUser {
  readonly id: string
  readonly name: string
}

/** A node in either generation's terms. */
export interface HeadscaleNode {
  /** the node id; tailscaled's `Status.Self.ID` is the same string */
  readonly id: string
  /** `nodekey:<hex>`, tailscaled's `Status.Self.PublicKey` */
  readonly nodeKey: string
  readonly machineKey: string | undefined
  /** the hostname the client reported */
  readonly name: string
  /** the MagicDNS label */
  readonly givenName: string
  readonly ipAddresses: ReadonlyArray<string>
  /** the owner (0.28+ list answers show tagged nodes as owned by `tagged-devices`) */
  readonly user: HeadscaleUser | undefined
  /** `tags` (0.28+), else the forced and valid tags */
  readonly tags: ReadonlyArray<string>
  readonly online: boolean
  readonly lastSeen: string | undefined
  readonly expiry: string | undefined
  readonly createdAt: string | undefined
  /** what the node announces (0.26+); undefined up to 0.25, where routes are rows: use `routesOf` */
  readonly advertisedRoutes: ReadonlyArray<string> | undefined
  /** the approved prefixes (0.26+); undefined up to 0.25: use `routesOf` */
  readonly approvedRoutes: ReadonlyArray<string> | undefined
}

export interface NodeRoutes {
  /** the prefixes the node announces */
  readonly advertised: ReadonlyArray<string>
  /** approved (0.26+: may include prefixes not announced yet) or enabled (≤0.25) */
  readonly approved: ReadonlyArray<string>
  /** what the node is the router for right now (0.26+ `subnetRoutes`; ≤0.25 enabled primary rows) */
  readonly serving: ReadonlyArray<string>
}

export interface ApproveRoutesResult {
  readonly generation: HeadscaleGeneration
  readonly nodeId: string
  /** the prefixes this call approved (0.26+) or enabled (≤0.25) */
  readonly approved: ReadonlyArray<string>
  /** the prefixes that already were */
  readonly alreadyApproved: ReadonlyArray<string>
}

export interface UnapproveRoutesResult {
  readonly generation: HeadscaleGeneration
  readonly nodeId: string
  /** the prefixes this call took out of the approved set (0.26+) or disabled (≤0.25) */
  readonly unapproved: ReadonlyArray<string>
  /** the prefixes that were not approved to begin with */
  readonly notApproved: ReadonlyArray<string>
}

export interface PreAuthKeyOptions {
  /** the owner: a user name, or `{ id }`. Needed up to 0.27; 0.28+ takes a key with tags and no user */
  readonly user?: string | { readonly id: string } | undefined
  readonly reusable: boolean
  /** nodes registered with it are ephemeral: deleted on logout */
  readonly ephemeral: boolean
  /** ACL tags (`tag:…`, lowercase) the key's nodes get */
  readonly tags?: ReadonlyArray<string> | undefined
  /** from now; must be positive */
  readonly expiresIn: Duration.Input
}

export interface HeadscalePreAuthKey {
  readonly id: string
  /** `hskey-auth-…` (0.28+) or the older formats */
  readonly key: Redacted.Redacted<string>
  /** the owner's name; undefined for a tagged key without user */
  readonly user: string | undefined
  readonly reusable: boolean
  readonly ephemeral: boolean
  readonly expiration: string | undefined
  readonly aclTags: ReadonlyArray<string>
}

export interface HeadscaleClient {
  /** the base URL (without user info) */
  readonly url: string
  /** `GET /version`, else the probe; cached once it succeeded */
  readonly version: () => Effect.Effect<HeadscaleServerVersion, ControlPlaneError>
  /** `GET /api/v1/node` (`?user=<name>` when given) */
  readonly nodes: (options?: { readonly user?: string | undefined }) => Effect.Effect<ReadonlyArray<HeadscaleNode>, ControlPlaneError>
  /** `GET /api/v1/node/{id}`; ControlPlaneNotFound when there is none */
  readonly node: (id: string) => Effect.Effect<HeadscaleNode, ControlPlaneError>
  /** `DELETE /api/v1/node/{id}`: true when it deleted the node, false when it was already gone */
  readonly deleteNode: (id: string) => Effect.Effect<boolean, ControlPlaneError>
  /**
   * Adds prefixes to one node's approved routes, leaving its other approvals and every other node
   * alone. 0.26+: read-modify-write of the node's approved set (approving before the node
   * announces is fine); calls of one client run one at a time, but another writer of the same
   * node in between the read and the write can still lose its change. ≤0.25: enables this node's rows for the prefixes; a prefix the node has
   * not advertised yet fails with RouteNotAdvertised (nothing enabled), to retry.
   */
  readonly approveRoutes: (nodeId: string, routes: ReadonlyArray<string>) => Effect.Effect<ApproveRoutesResult, ControlPlaneError>
  /**
   * Takes prefixes out of one node's approved routes, leaving its other approvals and every other
   * node alone (an exit route takes its sibling with it: Headscale approves them as a pair).
   * 0.26+: read-modify-write of the node's approved set, as `approveRoutes`; a prefix stays approved
   * there after the node stops announcing it. ≤0.25: disables this node's enabled rows for them.
   */
  readonly unapproveRoutes: (nodeId: string, routes: ReadonlyArray<string>) => Effect.Effect<UnapproveRoutesResult, ControlPlaneError>
  /** one node's advertised, approved and served prefixes (0.26+: from the node list, which fills `subnetRoutes`) */
  readonly routesOf: (nodeId: string) => Effect.Effect<NodeRoutes, ControlPlaneError>
  /** `POST /api/v1/preauthkey`; the key comes back `Redacted` */
  readonly createPreAuthKey: (options: PreAuthKeyOptions) => Effect.Effect<HeadscalePreAuthKey, ControlPlaneError>
}

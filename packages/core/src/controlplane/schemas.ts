import { Schema } from "effect"

/**
 * JSON shapes of the Headscale admin API (`/api/v1`), as grpc-gateway's protojson writes them up
 * to 0.29 (and 0.30's native server reproduces): lowerCamelCase keys, uint64 ids as decimal
 * strings, RFC 3339 times as strings, unset messages as `null`. Fields this client does not need,
 * or that one generation lacks, are optional; unknown keys are ignored. Both generations decode
 * with the same schemas: 0.26+ nodes carry `approvedRoutes`/`availableRoutes`/`subnetRoutes` and
 * (0.28+) `tags`; ≤0.25 nodes carry `forcedTags`/`validTags`/`invalidTags`, and routes are rows.
 */

const opt = Schema.optionalKey
const Strings = Schema.Array(Schema.String)
const OptionalTime = opt(Schema.NullOr(Schema.String))

/** A uint64 id as protojson prints it. */
export const Id = Schema.String.check(Schema.isPattern(/^\d+$/))

export const User = Schema.Struct({
  id: Id,
  name: Schema.String,
  createdAt: OptionalTime,
  displayName: opt(Schema.String),
  email: opt(Schema.String)
})
export type User = typeof User.Type

export const Node = Schema.Struct({
  id: Id,
  machineKey: opt(Schema.String),
  /** `nodekey:<hex>`, tailscaled's `Status.Self.PublicKey` */
  nodeKey: Schema.String,
  ipAddresses: Strings,
  /** the hostname the client reported */
  name: Schema.String,
  user: opt(Schema.NullOr(User)),
  lastSeen: OptionalTime,
  expiry: OptionalTime,
  createdAt: OptionalTime,
  /** the MagicDNS label */
  givenName: Schema.String,
  online: opt(Schema.Boolean),
  // 0.26+
  approvedRoutes: opt(Strings),
  availableRoutes: opt(Strings),
  subnetRoutes: opt(Strings),
  // 0.28+
  tags: opt(Strings),
  // up to 0.27
  forcedTags: opt(Strings),
  validTags: opt(Strings),
  invalidTags: opt(Strings)
})
export type Node = typeof Node.Type

export const NodeAnswer = Schema.Struct({ node: Node })
export const NodesAnswer = Schema.Struct({ nodes: Schema.Array(Node) })
export const UsersAnswer = Schema.Struct({ users: Schema.Array(User) })

/** A route row (up to 0.25). Only the embedded node's id is used. */
export const Route = Schema.Struct({
  id: Id,
  node: opt(Schema.NullOr(Schema.Struct({ id: Id }))),
  prefix: Schema.String,
  advertised: Schema.Boolean,
  enabled: Schema.Boolean,
  isPrimary: opt(Schema.Boolean)
})
export type Route = typeof Route.Type

export const RoutesAnswer = Schema.Struct({ routes: Schema.Array(Route) })

/** `user` is a User from 0.26 (null for a tagged key, 0.28+), the user's name up to 0.25. */
export const PreAuthKey = Schema.Struct({
  user: opt(Schema.NullOr(Schema.Union([User, Schema.String]))),
  id: Id,
  key: Schema.String,
  reusable: Schema.Boolean,
  ephemeral: Schema.Boolean,
  used: opt(Schema.Boolean),
  expiration: OptionalTime,
  createdAt: OptionalTime,
  aclTags: opt(Strings)
})
export type PreAuthKey = typeof PreAuthKey.Type

export const PreAuthKeyAnswer = Schema.Struct({ preAuthKey: PreAuthKey })

export const ApiKeysAnswer = Schema.Struct({ apiKeys: Schema.Array(Schema.Struct({ prefix: opt(Schema.String) })) })

/** `GET /version` (0.27+). */
export const VersionAnswer = Schema.Struct({ version: Schema.String, commit: opt(Schema.String) })

/** An empty object, as the enable/disable/delete calls answer. */
export const EmptyAnswer = Schema.Struct({})

/** An error body: grpc-gateway's `{code,message,details}` (≤0.29) or RFC 7807 problem JSON (0.30). */
export const ErrorBody = Schema.Struct({
  message: opt(Schema.String),
  detail: opt(Schema.String),
  title: opt(Schema.String),
  error: opt(Schema.String)
})

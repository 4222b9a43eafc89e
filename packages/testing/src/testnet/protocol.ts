import * as path from "node:path"
import { Schema } from "effect"

/**
 * The private protocol between the stand-in `tailscaled` and the testnet control server. It is
 * not Tailscale's (the real daemon speaks ts2021 to a real control server): it carries just what
 * the stand-in needs to act like a node on a tailnet. Both ends live in this package.
 *
 * The server listens on two unix sockets in its state directory, reachable from every network
 * namespace on the machine (only the mount namespace matters for a path socket):
 *
 * - `control.sock`: HTTP/1.1. `/ts/*` below for stand-in daemons, and the Headscale-compatible
 *   admin API under `/api/v1/*` (also served on TCP loopback as `apiUrl`).
 * - `relay.sock`: packets between nodes. A client first writes one line of JSON,
 *   `{"nodeKey":"nodekey:..."}\n`, and reads one line back, `{"ok":true}\n` or
 *   `{"error":"..."}\n`. Then both sides exchange frames: a 4-byte big-endian length, then one raw
 *   IP packet (IPv4 or IPv6, no extra header). The server forwards each packet to the connection
 *   of the node that owns its destination address and drops it when no such node is connected.
 *   A node counts as online while its relay connection is open.
 *
 * `loginServer` (the `ControlURL` a stand-in daemon gets in its prefs) is `unix:` followed by the
 * absolute path of `control.sock`.
 */

export const controlSocketOf = (stateDir: string) => path.join(stateDir, "control.sock")
export const relaySocketOf = (stateDir: string) => path.join(stateDir, "relay.sock")

export const loginServerFor = (controlSocket: string) => `unix:${controlSocket}`

/** The control socket a `loginServer` names; undefined when it is not a testnet login server. */
export const controlSocketFromLoginServer = (loginServer: string): string | undefined =>
  loginServer.startsWith("unix:/") ? loginServer.slice("unix:".length) : undefined

/** The tailnet's MagicDNS suffix (Headscale's `dns.base_domain`). */
export const MAGIC_DNS_SUFFIX = "tailnet.containerscale.test"

export const TestnetNode = Schema.Struct({
  /** Headscale's node id; tailscaled's `Status.Self.ID` is its decimal string */
  id: Schema.Number,
  nodeKey: Schema.String,
  /** the hostname the daemon reported */
  name: Schema.String,
  /** the MagicDNS label (lowercase, unique in the tailnet) */
  givenName: Schema.String,
  /** `givenName.MAGIC_DNS_SUFFIX.` with the trailing dot */
  dnsName: Schema.String,
  /** one IPv4 in 100.64.0.0/10 and one IPv6 in fd7a:115c:a1e0::/48 */
  addresses: Schema.Array(Schema.String),
  userId: Schema.Number,
  userName: Schema.String,
  /** what tailscaled shows as the owner's LoginName and DisplayName (Headscale: the email when there is one) */
  userLoginName: Schema.optional(Schema.String),
  userDisplayName: Schema.optional(Schema.String),
  tags: Schema.Array(Schema.String),
  ephemeral: Schema.Boolean,
  online: Schema.Boolean,
  advertisedRoutes: Schema.Array(Schema.String),
  approvedRoutes: Schema.Array(Schema.String),
  createdAt: Schema.String,
  lastSeen: Schema.NullOr(Schema.String),
  /** set when the node logged out (non-ephemeral) or an admin expired it: it must log in again */
  expired: Schema.Boolean
})
export type TestnetNode = typeof TestnetNode.Type

export const Tailnet = Schema.Struct({ name: Schema.String, magicDnsSuffix: Schema.String })
export type Tailnet = typeof Tailnet.Type

/**
 * `POST /ts/register`: a daemon logs in. `authKey` is needed when the node key is unknown or its
 * node expired; a known, unexpired node key comes back as the same node (same id, addresses,
 * name), which is how a restarted daemon with its state keeps its identity. Errors, with
 * Headscale's words in `error`: 401 for an unknown, used (single-use) or expired key (`invalid pre
 * auth key`, `authkey already used`, `authkey expired`); 500 when a new node asks for tags with a
 * pre-auth key (`… requested tags [tag:x] are invalid or not permitted`); 400 for a bad body.
 */
export const RegisterRequest = Schema.Struct({
  nodeKey: Schema.String,
  authKey: Schema.optional(Schema.String),
  hostname: Schema.String,
  advertiseTags: Schema.optional(Schema.Array(Schema.String)),
  advertiseRoutes: Schema.optional(Schema.Array(Schema.String))
})
export const RegisterResponse = Schema.Struct({ node: TestnetNode, tailnet: Tailnet })
export type RegisterRequest = typeof RegisterRequest.Type
export type RegisterResponse = typeof RegisterResponse.Type

/** `POST /ts/logout` `{nodeKey}` -> `{}`: an ephemeral node is deleted, any other expires. */
export const LogoutRequest = Schema.Struct({ nodeKey: Schema.String })

/**
 * `POST /ts/netmap` `{nodeKey}` -> the node and its peers (every other unexpired node); 404 when
 * the node is gone or expired (the daemon then goes back to NeedsLogin).
 */
export const NetmapRequest = Schema.Struct({ nodeKey: Schema.String })
export const NetmapResponse = Schema.Struct({ self: TestnetNode, peers: Schema.Array(TestnetNode), tailnet: Tailnet })
export type NetmapResponse = typeof NetmapResponse.Type

/** `POST /ts/update`: a running daemon's hostname or advertised routes changed (PATCH prefs). -> `{node}` */
export const UpdateRequest = Schema.Struct({
  nodeKey: Schema.String,
  hostname: Schema.optional(Schema.String),
  advertiseRoutes: Schema.optional(Schema.Array(Schema.String))
})

/** Every error body on `/ts/*`. */
export const ErrorBody = Schema.Struct({ error: Schema.String })

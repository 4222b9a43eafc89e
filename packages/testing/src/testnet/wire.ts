import { ipv4Of, ipv6Of, isExitRoute } from "./addresses.ts"
import { maskedAuthKey } from "./secrets.ts"
import { type RouteView, type TestnetState, TAGGED_DEVICES_USER, usernameOf } from "./state.ts"
import type { StoredApiKey, StoredNode, StoredPreAuthKey, StoredUser } from "./store.ts"

/**
 * Headscale 0.28+/0.29 objects as grpc-gateway's protojson writes them: lowerCamelCase, uint64
 * ids as strings, every field present, unset messages as null, keys in wire order. With a state
 * imitating 0.25, nodes and pre-auth keys take that generation's shapes instead (see below).
 */

/** RFC 3339 the way protojson prints a Timestamp: no fraction when it is zero. */
export const protoTime = (iso: string): string => iso.replace(/\.0+Z$/, "Z")

const optionalTime = (iso: string | null) => (iso === null ? null : protoTime(iso))

export const userJson = (user: StoredUser) => ({
  id: String(user.id),
  name: user.name,
  createdAt: protoTime(user.createdAt),
  displayName: user.displayName,
  email: user.email,
  providerId: "",
  provider: "",
  profilePicUrl: user.profilePicUrl
})

const taggedDevicesJson = () =>
  userJson({ ...TAGGED_DEVICES_USER, email: "", profilePicUrl: "", createdAt: "0001-01-01T00:00:00Z" })

/** The plaintext key only in the create response; lists show the prefix. 0.25: `user` is the user's Username() (email, else name). */
export const preAuthKeyJson = (state: TestnetState, key: StoredPreAuthKey, reveal: boolean) => {
  const user = state.userOfId(key.userId)
  if (state.isLegacy) {
    // up to 0.27 keys were stored in plain text, and lists showed them whole
    return {
      user: user === undefined ? "" : usernameOf(user),
      id: String(key.id),
      key: key.key,
      reusable: key.reusable,
      ephemeral: key.ephemeral,
      used: key.used,
      expiration: protoTime(key.expiration),
      createdAt: protoTime(key.createdAt),
      aclTags: key.aclTags
    }
  }
  return {
    user: user === undefined ? null : userJson(user),
    id: String(key.id),
    key: reveal ? key.key : maskedAuthKey(key.prefix),
    reusable: key.reusable,
    ephemeral: key.ephemeral,
    used: key.used,
    expiration: protoTime(key.expiration),
    createdAt: protoTime(key.createdAt),
    aclTags: key.aclTags
  }
}

/** 0.28+ shows the prefix as `hskey-api-<prefix>-***`. */
export const apiKeyJson = (state: TestnetState, key: StoredApiKey) => ({
  id: String(key.id),
  prefix: state.isLegacy ? key.prefix : `hskey-api-${key.prefix}-***`,
  expiration: protoTime(key.expiration),
  createdAt: protoTime(key.createdAt),
  lastSeen: optionalTime(key.lastSeen)
})

export interface NodeView {
  /** list and approve_routes fill `subnetRoutes`; a single GET leaves it empty */
  readonly withSubnetRoutes: boolean
  /** list responses show tagged nodes as owned by `tagged-devices`; the others show no user for them */
  readonly taggedAsDevices: boolean
}

/**
 * 0.25's Node: no route fields (routes are rows, see routeJson), `forcedTags` (from the key or
 * set through the API), `invalidTags` and `validTags` (here: the forced tags, there being no
 * policy) instead of `tags`, and always the owning user.
 */
export const legacyNodeJson = (state: TestnetState, node: StoredNode) => {
  const owner = state.userOfId(node.userId)
  const preAuthKey = state.preAuthKeyById(node.preAuthKeyId)
  return {
    id: String(node.id),
    machineKey: node.machineKey,
    nodeKey: node.nodeKey,
    discoKey: node.discoKey,
    ipAddresses: [ipv4Of(node.id), ipv6Of(node.id)],
    name: node.hostname,
    user: owner === undefined ? null : userJson(owner),
    lastSeen: optionalTime(node.lastSeen),
    expiry: optionalTime(node.expiry),
    preAuthKey: preAuthKey === undefined ? null : preAuthKeyJson(state, preAuthKey, false),
    createdAt: protoTime(node.createdAt),
    registerMethod: "REGISTER_METHOD_AUTH_KEY",
    forcedTags: node.tags,
    invalidTags: [],
    validTags: node.tags,
    givenName: node.givenName,
    online: state.isOnline(node)
  }
}

/** 0.25's Route row, with its node embedded as the row loads it: no pre-auth key, offline, no valid tags. */
export const routeJson = (state: TestnetState, route: RouteView) => ({
  id: String(route.id),
  node: { ...legacyNodeJson(state, route.node), preAuthKey: null, validTags: [], online: false },
  prefix: route.prefix,
  advertised: route.advertised,
  enabled: route.enabled,
  isPrimary: route.isPrimary,
  createdAt: protoTime(route.createdAt),
  updatedAt: protoTime(route.updatedAt),
  deletedAt: null
})

export const nodeJson = (state: TestnetState, node: StoredNode, view: NodeView) => {
  if (state.isLegacy) return legacyNodeJson(state, node)
  const owner = state.userOfId(node.userId)
  const preAuthKey = state.preAuthKeyById(node.preAuthKeyId)
  const tagged = node.tags.length > 0 || owner === undefined
  const user = !tagged ? userJson(owner) : view.taggedAsDevices ? taggedDevicesJson() : null
  return {
    id: String(node.id),
    machineKey: node.machineKey,
    nodeKey: node.nodeKey,
    discoKey: node.discoKey,
    ipAddresses: [ipv4Of(node.id), ipv6Of(node.id)],
    name: node.hostname,
    user,
    lastSeen: optionalTime(node.lastSeen),
    expiry: optionalTime(node.expiry),
    preAuthKey: preAuthKey === undefined ? null : preAuthKeyJson(state, preAuthKey, false),
    createdAt: protoTime(node.createdAt),
    registerMethod: "REGISTER_METHOD_AUTH_KEY",
    givenName: node.givenName,
    online: state.isOnline(node),
    approvedRoutes: node.approvedRoutes,
    availableRoutes: node.advertisedRoutes,
    // exit routes are approved like others but are no subnet routes
    subnetRoutes: view.withSubnetRoutes ? state.subnetRoutes(node).filter((route) => !isExitRoute(route)) : [],
    tags: node.tags
  }
}

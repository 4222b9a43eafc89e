import type { StoredState } from "./store.ts"
import { ApprovedRoutes } from "./state/approved-routes.ts"
import { Nodes } from "./state/nodes.ts"
import { RouteRows } from "./state/route-rows.ts"
import { type HeadscaleVersion, Tables } from "./state/shared.ts"
import { DEFAULT_USER, UsersAndKeys } from "./state/users.ts"

export type { HostinfoUpdate, Registration } from "./state/nodes.ts"
export type { RouteView } from "./state/route-rows.ts"
export { type FailureKind, HEADSCALE_VERSIONS, type HeadscaleVersion, TestnetFailure, ZERO_TIME } from "./state/shared.ts"
export { DEFAULT_USER, type NewPreAuthKey, TAGGED_DEVICES_USER, usernameOf } from "./state/users.ts"

/**
 * The tailnet: users, pre-auth keys, API keys and nodes, with Headscale's rules. Every change is
 * handed to `persist`; which nodes are online is known only while the process runs. The parts
 * live in `state/`: the shared tables (`shared.ts`), users and keys (`users.ts`), nodes
 * (`nodes.ts`), and routes in each API generation's terms: approved sets on the node (0.26+,
 * `approved-routes.ts`) and route rows enabled by id (0.25, `route-rows.ts`). This class composes
 * them behind the one object the /ts and /api layers and the relay use.
 */
export class TestnetState {
  readonly headscaleVersion: HeadscaleVersion
  /** Called when a node may no longer use the tailnet (deleted, logged out, expired). */
  onNodeRevoked: (nodeKey: string) => void = () => {}

  private readonly t: Tables
  private readonly keys: UsersAndKeys
  private readonly approved: ApprovedRoutes
  private readonly rows: RouteRows
  private readonly nodesPart: Nodes

  constructor(saved: StoredState | undefined, persist: (state: StoredState) => void, options: { readonly headscaleVersion?: HeadscaleVersion | undefined } = {}) {
    this.headscaleVersion = options.headscaleVersion ?? "0.29"
    this.t = new Tables(saved, persist, this.headscaleVersion)
    this.keys = new UsersAndKeys(this.t)
    this.approved = new ApprovedRoutes(this.t)
    this.rows = new RouteRows(this.t, this.approved)
    this.nodesPart = new Nodes(this.t, this.keys, this.approved, this.rows, (nodeKey) => this.onNodeRevoked(nodeKey))
    if (this.keys.userByName(DEFAULT_USER) === undefined) this.keys.createUser({ name: DEFAULT_USER })
  }

  get isLegacy(): boolean {
    return this.t.isLegacy
  }

  readonly snapshot = (): StoredState => this.t.snapshot()

  // Users, pre-auth keys and API keys

  readonly listUsers: UsersAndKeys["listUsers"] = (filter) => this.keys.listUsers(filter)
  readonly userByName: UsersAndKeys["userByName"] = (name) => this.keys.userByName(name)
  readonly createUser: UsersAndKeys["createUser"] = (input) => this.keys.createUser(input)
  readonly renameUser: UsersAndKeys["renameUser"] = (id, newName) => this.keys.renameUser(id, newName)
  readonly deleteUser: UsersAndKeys["deleteUser"] = (id) => this.keys.deleteUser(id)
  readonly userOfId: UsersAndKeys["userOfId"] = (id) => this.keys.userOfId(id)
  readonly createPreAuthKey: UsersAndKeys["createPreAuthKey"] = (input) => this.keys.createPreAuthKey(input)
  readonly listPreAuthKeys: UsersAndKeys["listPreAuthKeys"] = () => this.keys.listPreAuthKeys()
  readonly preAuthKeyById: UsersAndKeys["preAuthKeyById"] = (id) => this.keys.preAuthKeyById(id)
  readonly preAuthKeyByValue: UsersAndKeys["preAuthKeyByValue"] = (value) => this.keys.preAuthKeyByValue(value)
  readonly expirePreAuthKey: UsersAndKeys["expirePreAuthKey"] = (id) => this.keys.expirePreAuthKey(id)
  readonly deletePreAuthKey: UsersAndKeys["deletePreAuthKey"] = (id) => this.keys.deletePreAuthKey(id)
  readonly createApiKey: UsersAndKeys["createApiKey"] = (expiration, bootstrap) => this.keys.createApiKey(expiration, bootstrap)
  readonly listApiKeys: UsersAndKeys["listApiKeys"] = () => this.keys.listApiKeys()
  readonly bootstrapApiKey: UsersAndKeys["bootstrapApiKey"] = () => this.keys.bootstrapApiKey()
  readonly expireApiKey: UsersAndKeys["expireApiKey"] = (selector) => this.keys.expireApiKey(selector)
  readonly deleteApiKey: UsersAndKeys["deleteApiKey"] = (prefix) => this.keys.deleteApiKey(prefix)
  readonly authenticate: UsersAndKeys["authenticate"] = (token) => this.keys.authenticate(token)

  // Nodes

  readonly nodes: Tables["nodes"] = () => this.t.nodes()
  readonly node: Tables["node"] = (id) => this.t.node(id)
  readonly isExpired: Tables["isExpired"] = (node) => this.t.isExpired(node)
  readonly nodeByKey: Nodes["nodeByKey"] = (nodeKey) => this.nodesPart.nodeByKey(nodeKey)
  readonly isOnline: Nodes["isOnline"] = (node) => this.nodesPart.isOnline(node)
  readonly subnetRoutes: Nodes["subnetRoutes"] = (node) => this.nodesPart.subnetRoutes(node)
  readonly register: Nodes["register"] = (request) => this.nodesPart.register(request)
  readonly update: Nodes["update"] = (request) => this.nodesPart.update(request)
  readonly logout: Nodes["logout"] = (nodeKey) => this.nodesPart.logout(nodeKey)
  readonly netmap: Nodes["netmap"] = (nodeKey) => this.nodesPart.netmap(nodeKey)
  readonly deleteNode: Nodes["deleteNode"] = (id) => this.nodesPart.deleteNode(id)
  readonly expireNode: Nodes["expireNode"] = (id, options) => this.nodesPart.expireNode(id, options)
  readonly renameNode: Nodes["renameNode"] = (id, newName) => this.nodesPart.renameNode(id, newName)
  readonly setTags: Nodes["setTags"] = (id, tags) => this.nodesPart.setTags(id, tags)
  readonly setOnline: Nodes["setOnline"] = (id, online) => this.nodesPart.setOnline(id, online)
  readonly destinationNode: Nodes["destinationNode"] = (address) => this.nodesPart.destinationNode(address)
  readonly toTestnetNode: Nodes["toTestnetNode"] = (node) => this.nodesPart.toTestnetNode(node)

  // Routes: the approved set on the node (0.26+), and route rows (0.25)

  readonly approveRoutes: ApprovedRoutes["approveRoutes"] = (id, routes) => this.approved.approveRoutes(id, routes)
  readonly routes: RouteRows["routes"] = (nodeId) => this.rows.routes(nodeId)
  readonly enableRoute: RouteRows["enableRoute"] = (id) => this.rows.enableRoute(id)
  readonly disableRoute: RouteRows["disableRoute"] = (id) => this.rows.disableRoute(id)
  readonly deleteRoute: RouteRows["deleteRoute"] = (id) => this.rows.deleteRoute(id)
}

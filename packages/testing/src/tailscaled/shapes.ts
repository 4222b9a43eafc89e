import type { Tailnet, TestnetNode } from "../testnet/protocol.ts"
import { nilIfEmpty, nilIfEmptyMap, ZERO_NODE_KEY, ZERO_TIME } from "./gojson.ts"
import { VERSION } from "./version.ts"

/** Go's JSON shapes for Status, PeerStatus, tailcfg.Node and friends, built from testnet nodes. */

export type BackendState = "NoState" | "InUseOtherUser" | "NeedsLogin" | "NeedsMachineAuth" | "Stopped" | "Starting" | "Running"

/** `ipn.State` as the bus sends it (an integer). */
export const STATE_NUMBER: Record<BackendState, number> = {
  NoState: 0,
  InUseOtherUser: 1,
  NeedsLogin: 2,
  NeedsMachineAuth: 3,
  Stopped: 4,
  Starting: 5,
  Running: 6
}

/** Everything a Status is built from. */
export interface StatusInput {
  readonly state: BackendState
  readonly tun: boolean
  readonly haveNodeKey: boolean
  readonly nodeKey: string | undefined
  /** the hostname the daemon reports before control gives it one */
  readonly hostname: string
  readonly self: TestnetNode | undefined
  readonly peers: ReadonlyArray<TestnetNode> | undefined
  readonly tailnet: Tailnet | undefined
  readonly health: ReadonlyArray<string> | null
  readonly online: boolean
}

const hostPrefix = (address: string) => `${address}/${address.includes(":") ? 128 : 32}`

const allowedIps = (node: TestnetNode) => [...node.addresses.map(hostPrefix), ...node.approvedRoutes]

/** Approved routes the node serves (`PrimaryRoutes`), only those it also advertises. */
const primaryRoutes = (node: TestnetNode) => node.approvedRoutes.filter((r) => node.advertisedRoutes.includes(r))

export const peerStatus = (node: TestnetNode, options: { readonly isSelf: boolean; readonly online: boolean }) => ({
  ID: String(node.id),
  NodeID: node.id,
  PublicKey: node.nodeKey,
  HostName: node.name,
  DNSName: node.dnsName,
  OS: "linux",
  UserID: node.userId,
  TailscaleIPs: nilIfEmpty(node.addresses),
  AllowedIPs: allowedIps(node),
  ...(node.tags.length > 0 ? { Tags: node.tags } : {}),
  ...(primaryRoutes(node).length > 0 ? { PrimaryRoutes: primaryRoutes(node) } : {}),
  Addrs: null,
  CurAddr: "",
  Relay: "",
  PeerRelay: "",
  RxBytes: 0,
  TxBytes: 0,
  Created: node.createdAt,
  LastWrite: ZERO_TIME,
  LastSeen: options.isSelf ? ZERO_TIME : node.lastSeen ?? ZERO_TIME,
  LastHandshake: ZERO_TIME,
  Online: options.online,
  ExitNode: false,
  ExitNodeOption: false,
  Active: false,
  PeerAPIURL: null,
  TaildropTarget: 0,
  NoFileSharingReason: "",
  InNetworkMap: true,
  InMagicSock: !options.isSelf,
  InEngine: !options.isSelf
})

/** Self before the node has logged in: only HostName, OS and Online mean anything. */
const loggedOutSelf = (hostname: string, nodeKey: string | undefined) => ({
  ID: "",
  PublicKey: nodeKey ?? ZERO_NODE_KEY,
  HostName: hostname,
  DNSName: "",
  OS: "linux",
  UserID: 0,
  TailscaleIPs: null,
  Addrs: null,
  CurAddr: "",
  Relay: "",
  PeerRelay: "",
  RxBytes: 0,
  TxBytes: 0,
  Created: ZERO_TIME,
  LastWrite: ZERO_TIME,
  LastSeen: ZERO_TIME,
  LastHandshake: ZERO_TIME,
  Online: false,
  ExitNode: false,
  ExitNodeOption: false,
  Active: false,
  PeerAPIURL: null,
  TaildropTarget: 0,
  NoFileSharingReason: "",
  InNetworkMap: false,
  InMagicSock: false,
  InEngine: false
})

export const userProfile = (node: TestnetNode) => ({
  ID: node.userId,
  LoginName: node.userName,
  DisplayName: node.userName,
  ProfilePicURL: ""
})

/** `ipnstate.Status`; `peers` false gives `Peer: null` (the `peers=false` query). */
export const status = (input: StatusInput, includePeers: boolean) => {
  const { self, tailnet } = input
  const peers = includePeers ? input.peers ?? [] : []
  const users: Record<string, ReturnType<typeof userProfile>> = {}
  for (const node of [...(self === undefined ? [] : [self]), ...peers]) users[String(node.userId)] = userProfile(node)
  const peerMap: Record<string, ReturnType<typeof peerStatus>> = {}
  for (const peer of peers) peerMap[peer.nodeKey] = peerStatus(peer, { isSelf: false, online: peer.online })
  const running = input.state === "Running"
  return {
    Version: VERSION,
    TUN: input.tun,
    BackendState: input.state,
    ...(input.haveNodeKey ? { HaveNodeKey: true } : {}),
    AuthURL: "",
    TailscaleIPs: self === undefined ? null : nilIfEmpty(self.addresses),
    Self: self === undefined ? loggedOutSelf(input.hostname, input.nodeKey) : peerStatus(self, { isSelf: true, online: input.online }),
    Health: input.health,
    MagicDNSSuffix: running && tailnet !== undefined ? tailnet.magicDnsSuffix : "",
    CurrentTailnet: running && tailnet !== undefined
      ? { Name: tailnet.name, MagicDNSSuffix: tailnet.magicDnsSuffix, MagicDNSEnabled: true }
      : null,
    CertDomains: null,
    Peer: includePeers ? nilIfEmptyMap(peerMap) : null,
    User: nilIfEmptyMap(users),
    ClientVersion: null
  }
}

/** `tailcfg.Node`, as whois and the bus's SelfChange carry it. */
export const tailcfgNode = (node: TestnetNode, online: boolean) => ({
  ID: node.id,
  StableID: String(node.id),
  Name: node.dnsName,
  User: node.userId,
  Key: node.nodeKey,
  KeyExpiry: ZERO_TIME,
  Machine: `mkey:${"0".repeat(64)}`,
  DiscoKey: `discokey:${"0".repeat(64)}`,
  Addresses: node.addresses.map(hostPrefix),
  AllowedIPs: allowedIps(node),
  Endpoints: null,
  Hostinfo: { Hostname: node.name, OS: "linux", ...(node.advertisedRoutes.length > 0 ? { RoutableIPs: node.advertisedRoutes } : {}) },
  Created: node.createdAt,
  ...(node.tags.length > 0 ? { Tags: node.tags } : {}),
  ...(primaryRoutes(node).length > 0 ? { PrimaryRoutes: primaryRoutes(node) } : {}),
  ...(node.lastSeen !== null ? { LastSeen: node.lastSeen } : {}),
  Online: online,
  MachineAuthorized: true,
  ComputedName: node.givenName,
  ComputedNameWithHost: node.givenName === node.name ? node.givenName : `${node.givenName} (${node.name})`
})

/** A small `netmap.NetworkMap` for the bus's InitialNetMap bit. */
export const networkMap = (self: TestnetNode, peers: ReadonlyArray<TestnetNode>, tailnet: Tailnet) => ({
  SelfNode: tailcfgNode(self, true),
  NodeKey: self.nodeKey,
  Peers: nilIfEmpty(peers.map((p) => tailcfgNode(p, p.online))),
  Domain: tailnet.name,
  UserProfiles: Object.fromEntries([self, ...peers].map((n) => [String(n.userId), userProfile(n)]))
})

/** `persist.Persist` with the private keys stripped, as `Prefs.Config` shows it. */
export const persistView = (self: TestnetNode) => ({
  PrivateNodeKey: `privkey:${"0".repeat(64)}`,
  OldPrivateNodeKey: `privkey:${"0".repeat(64)}`,
  UserProfile: userProfile(self),
  NetworkLockKey: `nlpriv:${"0".repeat(64)}`,
  NodeID: String(self.id)
})

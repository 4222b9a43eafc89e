import type { Tailnet, TestnetNode } from "../testnet/protocol.ts"
import { nilIfEmpty, nilIfEmptyMap, ZERO_NODE_KEY, ZERO_TIME } from "./gojson.ts"
import { parseAddress } from "./ip.ts"
import { CAPABILITY_VERSION, VERSION } from "./version.ts"

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
  readonly health: ReadonlyArray<string>
  readonly online: boolean
}

const hostPrefix = (address: string) => `${address}/${address.includes(":") ? 128 : 32}`

const isExitRoute = (route: string) => route === "0.0.0.0/0" || route === "::/0"

/** Prefixes in tailscaled's order: IPv4 before IPv6, then by address, then by length. */
const sortedPrefixes = (prefixes: ReadonlyArray<string>) => {
  const key = (prefix: string) => {
    const [address, bits] = prefix.split("/") as [string, string]
    const bytes = parseAddress(address) ?? new Uint8Array()
    return { bytes, bits: Number(bits) }
  }
  return [...prefixes].sort((a, b) => {
    const x = key(a)
    const y = key(b)
    if (x.bytes.length !== y.bytes.length) return x.bytes.length - y.bytes.length
    for (let i = 0; i < x.bytes.length; i++) if (x.bytes[i] !== y.bytes[i]) return x.bytes[i]! - y.bytes[i]!
    return x.bits - y.bits
  })
}

/** Served routes (advertised and approved) go into AllowedIPs, next to the node's own addresses. */
const allowedIps = (node: TestnetNode) =>
  sortedPrefixes([...node.addresses.map(hostPrefix), ...node.approvedRoutes.filter((r) => node.advertisedRoutes.includes(r))])

/** The subnet routes the node serves (`PrimaryRoutes`): approved and advertised, exit routes aside. */
const primaryRoutes = (node: TestnetNode) => node.approvedRoutes.filter((r) => node.advertisedRoutes.includes(r) && !isExitRoute(r))

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
  LastSeen: ZERO_TIME,
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
  NodeID: 0,
  PublicKey: nodeKey ?? ZERO_NODE_KEY,
  HostName: hostname,
  DNSName: "",
  OS: "linux",
  UserID: 0,
  TailscaleIPs: null,
  Addrs: [],
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

/** `tailcfg.UserProfile` as Headscale fills it (no picture: ProfilePicURL is omitted when empty). */
export const userProfile = (node: TestnetNode) => ({
  ID: node.userId,
  LoginName: node.userLoginName ?? node.userName,
  DisplayName: node.userDisplayName ?? node.userName
})

/** `ipnstate.Status`; `peers` false gives `Peer: null` (the `peers=false` query). */
export const status = (input: StatusInput, includePeers: boolean) => {
  const { self, tailnet } = input
  const peers = includePeers ? input.peers ?? [] : []
  const users: Record<string, ReturnType<typeof userProfile>> = {}
  for (const node of [...(self === undefined ? [] : [self]), ...peers]) users[String(node.userId)] = userProfile(node)
  const peerMap: Record<string, ReturnType<typeof peerStatus>> = {}
  for (const peer of peers) peerMap[peer.nodeKey] = peerStatus(peer, { isSelf: false, online: peer.online })
  // Headscale names the tailnet after its server URL's host, which a unix: URL has not: the suffix stands in
  const netmapKnown = self !== undefined && tailnet !== undefined
  return {
    Version: VERSION,
    TUN: input.tun,
    BackendState: input.state,
    ...(input.haveNodeKey ? { HaveNodeKey: true } : {}),
    AuthURL: "",
    TailscaleIPs: self === undefined ? null : nilIfEmpty(self.addresses),
    Self: self === undefined ? loggedOutSelf(input.hostname, input.nodeKey) : peerStatus(self, { isSelf: true, online: input.online }),
    Health: input.health,
    MagicDNSSuffix: netmapKnown ? tailnet.magicDnsSuffix : "",
    CurrentTailnet: netmapKnown ? { Name: tailnet.name, MagicDNSSuffix: tailnet.magicDnsSuffix, MagicDNSEnabled: true } : null,
    CertDomains: null,
    ExtraRecords: null,
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
  Machine: `mkey:${"0".repeat(64)}`,
  DiscoKey: `discokey:${"0".repeat(64)}`,
  Addresses: node.addresses.map(hostPrefix),
  AllowedIPs: allowedIps(node),
  Hostinfo: { OS: "linux", Hostname: node.name, ...(node.advertisedRoutes.length > 0 ? { RoutableIPs: node.advertisedRoutes } : {}) },
  Created: node.createdAt,
  Cap: CAPABILITY_VERSION,
  ...(node.tags.length > 0 ? { Tags: node.tags } : {}),
  ...(primaryRoutes(node).length > 0 ? { PrimaryRoutes: primaryRoutes(node) } : {}),
  ...(!online && node.lastSeen !== null ? { LastSeen: node.lastSeen } : {}),
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
  NetworkLockKey: `nlpriv:${"0".repeat(128)}`,
  NodeID: String(self.id)
})

import { Effect, Schema } from "effect"

/**
 * JSON shapes of the Tailscale LocalAPI (`/localapi/v0/`), as Go's encoding/json writes them:
 * PascalCase keys, `null` for nil slices and maps, integer NodeID/UserID, string prefixes and
 * RFC 3339 times (kept as strings). Unknown keys are tolerated everywhere (and kept in Prefs, so
 * a read-modify-write round trip loses nothing); fields newer than tailscale 1.80 or marked
 * omitempty upstream are optional.
 */

const opt = Schema.optionalKey
const Strings = Schema.NullOr(Schema.Array(Schema.String))
const AnyObject = Schema.Record(Schema.String, Schema.Unknown)

// ---------------------------------------------------------------------------------------------
// Backend states

export const BackendState = Schema.Literals([
  "NoState",
  "InUseOtherUser",
  "NeedsLogin",
  "NeedsMachineAuth",
  "Stopped",
  "Starting",
  "Running"
])
export type BackendState = typeof BackendState.Type

const backendStates: ReadonlyArray<BackendState> = BackendState.literals

/** The bus's `State` integer (0-6) as the name `status` uses; undefined for anything else. */
export const backendStateOf = (n: number): BackendState | undefined => backendStates[n]

/** The bus integer of a state name (the inverse of `backendStateOf`). */
export const backendStateNumber = (state: BackendState): NotifyState => backendStates.indexOf(state) as NotifyState

/** `Notify.State`: 0 NoState, 1 InUseOtherUser, 2 NeedsLogin, 3 NeedsMachineAuth, 4 Stopped, 5 Starting, 6 Running. */
export const NotifyState = Schema.Literals([0, 1, 2, 3, 4, 5, 6])
export type NotifyState = typeof NotifyState.Type

// ---------------------------------------------------------------------------------------------
// Status (ipnstate.Status)

export const UserProfile = Schema.Struct({
  ID: Schema.Number,
  LoginName: Schema.String,
  DisplayName: Schema.String,
  ProfilePicURL: opt(Schema.String)
})
export type UserProfile = typeof UserProfile.Type

export const PeerStatus = Schema.Struct({
  /** the stable node id (headscale: the node id as a decimal string) */
  ID: Schema.String,
  /** 0 when unknown: before login, or from a daemon older than the field (or omitting it when zero) */
  NodeID: Schema.Number.pipe(Schema.withDecodingDefaultKey(Effect.succeed(0))),
  /** "nodekey:<hex>" */
  PublicKey: Schema.String,
  /** the OS hostname (not unique) */
  HostName: Schema.String,
  /** the FQDN with a trailing dot, "" before login */
  DNSName: Schema.String,
  OS: Schema.String,
  UserID: Schema.Number,
  AltSharerUserID: opt(Schema.Number),
  TailscaleIPs: Strings,
  /** prefixes, including approved subnet routes */
  AllowedIPs: opt(Strings),
  Tags: opt(Strings),
  /** the subnet routes this node serves now (confirms route approval) */
  PrimaryRoutes: opt(Strings),
  Addrs: opt(Strings),
  CurAddr: opt(Schema.String),
  Relay: opt(Schema.String),
  PeerRelay: opt(Schema.String),
  RxBytes: opt(Schema.Number),
  TxBytes: opt(Schema.Number),
  Created: opt(Schema.String),
  LastWrite: opt(Schema.String),
  LastSeen: opt(Schema.String),
  LastHandshake: opt(Schema.String),
  Online: Schema.Boolean,
  ExitNode: opt(Schema.Boolean),
  ExitNodeOption: opt(Schema.Boolean),
  Active: opt(Schema.Boolean),
  PeerAPIURL: opt(Strings),
  TaildropTarget: opt(Schema.Number),
  NoFileSharingReason: opt(Schema.String),
  CapMap: opt(Schema.NullOr(AnyObject)),
  ShareeNode: opt(Schema.Boolean),
  InNetworkMap: opt(Schema.Boolean),
  InMagicSock: opt(Schema.Boolean),
  InEngine: opt(Schema.Boolean),
  Expired: opt(Schema.Boolean),
  KeyExpiry: opt(Schema.NullOr(Schema.String))
})
export type PeerStatus = typeof PeerStatus.Type

export const TailnetStatus = Schema.Struct({
  Name: Schema.String,
  MagicDNSSuffix: Schema.String,
  MagicDNSEnabled: Schema.Boolean
})
export type TailnetStatus = typeof TailnetStatus.Type

export const Status = Schema.Struct({
  Version: Schema.String,
  /** false: userspace networking */
  TUN: Schema.Boolean,
  BackendState,
  /** whether the profile has logged in (omitempty upstream, so absent means false) */
  HaveNodeKey: Schema.Boolean.pipe(Schema.withDecodingDefaultKey(Effect.succeed(false))),
  AuthURL: Schema.String.pipe(Schema.withDecodingDefaultKey(Effect.succeed(""))),
  /** null before the first netmap */
  TailscaleIPs: Strings,
  /** always present, even before login */
  Self: PeerStatus,
  ExitNodeStatus: opt(Schema.NullOr(Schema.Struct({
    ID: Schema.String,
    Online: Schema.Boolean,
    TailscaleIPs: Strings
  }))),
  /** human-readable warnings */
  Health: Strings,
  MagicDNSSuffix: Schema.String,
  /** null until a netmap exists */
  CurrentTailnet: Schema.NullOr(TailnetStatus),
  CertDomains: opt(Strings),
  /** keyed by "nodekey:<hex>"; null with `peers=false` or without peers */
  Peer: Schema.NullOr(Schema.Record(Schema.String, PeerStatus)),
  /** keyed by decimal UserID */
  User: Schema.NullOr(Schema.Record(Schema.String, UserProfile)),
  ClientVersion: opt(Schema.NullOr(Schema.Unknown))
})
export type Status = typeof Status.Type

// ---------------------------------------------------------------------------------------------
// Prefs (ipn.Prefs)

/** `Prefs.NetfilterMode` */
export const NetfilterMode = { Off: 0, NoDivert: 1, On: 2 } as const

export const AutoUpdatePrefs = Schema.Struct({
  Check: Schema.Boolean,
  /** opt.Bool: null means unset */
  Apply: opt(Schema.NullOr(Schema.Boolean))
})

const PrefsFields = Schema.Struct({
  /** "" means https://controlplane.tailscale.com */
  ControlURL: Schema.String,
  /** --accept-routes */
  RouteAll: Schema.Boolean,
  ExitNodeID: opt(Schema.String),
  ExitNodeIP: opt(Schema.String),
  AutoExitNode: opt(Schema.String),
  InternalExitNodePrior: opt(Schema.String),
  ExitNodeAllowLANAccess: opt(Schema.Boolean),
  /** --accept-dns */
  CorpDNS: Schema.Boolean,
  RunSSH: opt(Schema.Boolean),
  RunWebClient: opt(Schema.Boolean),
  WantRunning: Schema.Boolean,
  LoggedOut: Schema.Boolean,
  ShieldsUp: Schema.Boolean,
  /** "tag:x" values */
  AdvertiseTags: Strings,
  Hostname: Schema.String,
  NotepadURLs: opt(Schema.Boolean),
  ForceDaemon: opt(Schema.Boolean),
  Egg: opt(Schema.Boolean),
  /** prefixes; an exit node has both 0.0.0.0/0 and ::/0 */
  AdvertiseRoutes: Strings,
  AdvertiseServices: opt(Strings),
  Sync: opt(Schema.NullOr(Schema.Boolean)),
  /** true when --snat-subnet-routes=false */
  NoSNAT: Schema.Boolean,
  NoStatefulFiltering: opt(Schema.NullOr(Schema.Boolean)),
  /** 0 off, 1 nodivert, 2 on (see `NetfilterMode`) */
  NetfilterMode: Schema.Number,
  OperatorUser: opt(Schema.String),
  ProfileName: opt(Schema.String),
  AutoUpdate: opt(AutoUpdatePrefs),
  AppConnector: opt(Schema.Struct({ Advertise: Schema.Boolean })),
  PostureChecking: opt(Schema.Boolean),
  NetfilterKind: opt(Schema.String),
  RemoteConfig: opt(Schema.Unknown),
  DriveShares: opt(Schema.NullOr(Schema.Array(Schema.Unknown))),
  RelayServerPort: opt(Schema.NullOr(Schema.Number)),
  RelayServerStaticEndpoints: opt(Strings),
  /** the Persist object, private keys stripped by the daemon */
  Config: opt(Schema.Unknown)
})

/**
 * The daemon's prefs. The type lists the known keys; the decoder keeps any other key the
 * daemon sent, so `start({ updatePrefs: { ...await prefs(), Hostname } })` round-trips them.
 */
export type Prefs = typeof PrefsFields.Type

/** Decodes `Prefs`, keeping unknown keys. */
export const Prefs = Schema.StructWithRest(PrefsFields, [AnyObject])

/**
 * The prefs of a new profile (Go's `ipn.NewPrefs()`), with every non-omitempty key present.
 * `start` replaces the stored prefs wholesale, and missing keys become Go zero values (CorpDNS
 * false, NetfilterMode off), so build `updatePrefs` from this.
 */
export const newPrefs = (): Prefs => ({
  ControlURL: "",
  RouteAll: false,
  ExitNodeID: "",
  ExitNodeIP: "",
  InternalExitNodePrior: "",
  ExitNodeAllowLANAccess: false,
  CorpDNS: true,
  RunSSH: false,
  RunWebClient: false,
  WantRunning: false,
  LoggedOut: false,
  ShieldsUp: false,
  AdvertiseTags: null,
  Hostname: "",
  NotepadURLs: false,
  AdvertiseRoutes: null,
  AdvertiseServices: null,
  Sync: null,
  NoSNAT: false,
  NoStatefulFiltering: true,
  NetfilterMode: NetfilterMode.On,
  AutoUpdate: { Check: true, Apply: null },
  AppConnector: { Advertise: false },
  PostureChecking: false,
  NetfilterKind: "",
  DriveShares: null,
  Config: null
})

// ---------------------------------------------------------------------------------------------
// MaskedPrefs (PATCH prefs body)

/** Prefs keys a client may set through PATCH (each has a `<Key>Set` flag). */
export type MaskablePrefsKey = Exclude<keyof Prefs, "InternalExitNodePrior" | "Config" | "AutoUpdate">

/**
 * The PATCH prefs body: prefs fields flattened at the top level, plus one `<Key>Set` flag per
 * field; fields whose flag is absent or false are ignored by the daemon. `maskPrefs` builds one.
 */
export type MaskedPrefs =
  & { readonly [K in MaskablePrefsKey]?: Prefs[K] }
  & { readonly AutoUpdate?: Prefs["AutoUpdate"] }
  & { readonly [K in MaskablePrefsKey as `${K}Set`]?: boolean }
  & { readonly AutoUpdateSet?: { readonly CheckSet?: boolean; readonly ApplySet?: boolean } }

/**
 * A PATCH body that sets exactly the given fields, e.g.
 * `maskPrefs({ AdvertiseRoutes: ["10.1.0.0/24"] })` gives
 * `{ AdvertiseRoutes: [...], AdvertiseRoutesSet: true }`. Keys clients cannot set are dropped.
 */
export const maskPrefs = (changes: Partial<Prefs>): MaskedPrefs => {
  const body: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(changes)) {
    if (value === undefined || key === "InternalExitNodePrior" || key === "Config") continue
    body[key] = value
    body[`${key}Set`] = key === "AutoUpdate" ? { CheckSet: true, ApplySet: true } : true
  }
  return body as MaskedPrefs
}

// ---------------------------------------------------------------------------------------------
// tailcfg.Node, WhoIs

export const Node = Schema.Struct({
  ID: Schema.Number,
  StableID: Schema.String,
  /** the FQDN with a trailing dot */
  Name: Schema.String,
  User: opt(Schema.Number),
  Sharer: opt(Schema.Number),
  Key: opt(Schema.String),
  KeyExpiry: opt(Schema.String),
  Machine: opt(Schema.String),
  DiscoKey: opt(Schema.String),
  Addresses: opt(Strings),
  AllowedIPs: opt(Strings),
  PrimaryRoutes: opt(Strings),
  Endpoints: opt(Strings),
  HomeDERP: opt(Schema.Number),
  Hostinfo: opt(Schema.NullOr(AnyObject)),
  Created: opt(Schema.String),
  Cap: opt(Schema.Number),
  Tags: opt(Strings),
  Online: opt(Schema.NullOr(Schema.Boolean)),
  MachineAuthorized: opt(Schema.Boolean),
  CapMap: opt(Schema.NullOr(AnyObject)),
  ComputedName: opt(Schema.String),
  ComputedNameWithHost: opt(Schema.String)
})
export type Node = typeof Node.Type

export const WhoIs = Schema.Struct({
  Node,
  UserProfile: Schema.NullOr(UserProfile),
  CapMap: opt(Schema.NullOr(AnyObject))
})
export type WhoIs = typeof WhoIs.Type

// ---------------------------------------------------------------------------------------------
// IPN bus

/** watch-ipn-bus mask bits (send the sum). Include `InitialState`; bits from 4096 need 1.100+. */
export const NotifyWatchOpt = {
  EngineUpdates: 1,
  InitialState: 2,
  InitialPrefs: 4,
  InitialNetMap: 8,
  NoPrivateKeys: 16,
  InitialDriveShares: 32,
  InitialOutgoingFiles: 64,
  InitialHealthState: 128,
  /** incompatible with 4096-32768 (the daemon answers 400) */
  RateLimit: 256,
  HealthActions: 512,
  InitialSuggestedExitNode: 1024,
  InitialClientVersion: 2048,
  PeerChanges: 4096,
  NoNetMap: 8192,
  InitialStatus: 16384,
  PeerPatches: 32768,
  /** rejected with 400 over the LocalAPI */
  InProcessNoDisconnect: 65536,
  SysPolicyChanges: 131072,
  PeerWireGuardState: 262144
} as const

export const UnhealthyState = Schema.Struct({
  WarnableCode: opt(Schema.String),
  Severity: opt(Schema.String),
  Title: opt(Schema.String),
  Text: opt(Schema.String),
  BrokenSince: opt(Schema.NullOr(Schema.String)),
  ImpactsConnectivity: opt(Schema.Boolean)
})

export const HealthState = Schema.Struct({
  /** keyed by warnable code */
  Warnings: opt(Schema.NullOr(Schema.Record(Schema.String, UnhealthyState)))
})
export type HealthState = typeof HealthState.Type

/**
 * One line of the IPN bus. Upstream always sends `Version`, `ErrMessage`, `LoginFinished`,
 * `State`, `Prefs`, `NetMap`, `Engine`, `BrowseToURL` (often null); all keys are optional here
 * so that older or partial daemons still decode.
 */
export const Notify = Schema.Struct({
  Version: opt(Schema.String),
  SessionID: opt(Schema.String),
  /** non-null is fatal */
  ErrMessage: opt(Schema.NullOr(Schema.String)),
  /** `{}` after a successful login */
  LoginFinished: opt(Schema.NullOr(Schema.Struct({}))),
  /** an integer, unlike `Status.BackendState`; see `backendStateOf` */
  State: opt(Schema.NullOr(NotifyState)),
  Prefs: opt(Schema.NullOr(Prefs)),
  SelfChange: opt(Schema.NullOr(Node)),
  InitialStatus: opt(Schema.NullOr(Status)),
  NetMap: opt(Schema.Unknown),
  Engine: opt(Schema.Unknown),
  /** an interactive login URL; ignore it when using an auth key */
  BrowseToURL: opt(Schema.NullOr(Schema.String)),
  Health: opt(Schema.NullOr(HealthState)),
  PeersChanged: opt(Schema.NullOr(Schema.Array(Node))),
  PeersRemoved: opt(Schema.NullOr(Schema.Array(Schema.Number))),
  PeerChangedPatch: opt(Schema.Unknown),
  UserProfiles: opt(Schema.Unknown),
  ClientVersion: opt(Schema.Unknown),
  LocalTCPPort: opt(Schema.NullOr(Schema.Number)),
  FilesWaiting: opt(Schema.Unknown),
  DriveShares: opt(Schema.Unknown),
  SuggestedExitNode: opt(Schema.Unknown)
})
export type Notify = typeof Notify.Type

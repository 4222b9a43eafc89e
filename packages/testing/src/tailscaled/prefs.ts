import { hostBitsError, parsePrefixError } from "./ip.ts"

/** `ipn.Prefs` as Go encodes it: every field in Go's order, `Config` (the Persist) last. */
export type Prefs = Record<string, unknown>

type FieldKind = "string" | "bool" | "int" | "stringList" | "prefixList" | "optBool" | "autoUpdate" | "appConnector" | "list" | "optInt"

interface Field {
  readonly name: string
  readonly kind: FieldKind
  /** omitted from the JSON while it holds its zero value */
  readonly omitEmpty?: boolean
}

const FIELDS: ReadonlyArray<Field> = [
  { name: "ControlURL", kind: "string" },
  { name: "RouteAll", kind: "bool" },
  { name: "ExitNodeID", kind: "string" },
  { name: "ExitNodeIP", kind: "string" },
  { name: "AutoExitNode", kind: "string", omitEmpty: true },
  { name: "InternalExitNodePrior", kind: "string" },
  { name: "ExitNodeAllowLANAccess", kind: "bool" },
  { name: "CorpDNS", kind: "bool" },
  { name: "RunSSH", kind: "bool" },
  { name: "RunWebClient", kind: "bool" },
  { name: "WantRunning", kind: "bool" },
  { name: "LoggedOut", kind: "bool" },
  { name: "ShieldsUp", kind: "bool" },
  { name: "AdvertiseTags", kind: "stringList" },
  { name: "Hostname", kind: "string" },
  { name: "NotepadURLs", kind: "bool" },
  { name: "ForceDaemon", kind: "bool", omitEmpty: true },
  { name: "Egg", kind: "bool", omitEmpty: true },
  { name: "AdvertiseRoutes", kind: "prefixList" },
  { name: "AdvertiseServices", kind: "stringList" },
  { name: "Sync", kind: "optBool" },
  { name: "NoSNAT", kind: "bool" },
  { name: "NoStatefulFiltering", kind: "optBool" },
  { name: "NetfilterMode", kind: "int" },
  { name: "OperatorUser", kind: "string", omitEmpty: true },
  { name: "ProfileName", kind: "string", omitEmpty: true },
  { name: "AutoUpdate", kind: "autoUpdate" },
  { name: "AppConnector", kind: "appConnector" },
  { name: "PostureChecking", kind: "bool" },
  { name: "NetfilterKind", kind: "string" },
  { name: "RemoteConfig", kind: "bool" },
  { name: "DriveShares", kind: "list" },
  { name: "RelayServerPort", kind: "optInt", omitEmpty: true },
  { name: "RelayServerStaticEndpoints", kind: "stringList", omitEmpty: true }
]

/** MaskedPrefs fields a client may set (`InternalExitNodePrior` is not one of them). */
const EDITABLE = FIELDS.filter((f) => f.name !== "InternalExitNodePrior")

/** Go's unmarshal error for a field of the wrong type. */
export class PrefsDecodeError extends Error {}

const goType: Record<FieldKind, string> = {
  string: "string",
  bool: "bool",
  int: "int",
  stringList: "[]string",
  prefixList: "[]netip.Prefix",
  optBool: "opt.Bool",
  autoUpdate: "ipn.AutoUpdatePrefs",
  appConnector: "ipn.AppConnectorPrefs",
  list: "[]*drive.Share",
  optInt: "uint16"
}

const jsType = (v: unknown) => (v === null ? "null" : Array.isArray(v) ? "array" : typeof v === "object" ? "object" : typeof v)

const zeroOf = (kind: FieldKind): unknown => {
  switch (kind) {
    case "string":
      return ""
    case "bool":
      return false
    case "int":
      return 0
    case "autoUpdate":
      return { Check: false, Apply: null }
    case "appConnector":
      return { Advertise: false }
    default:
      return null
  }
}

const decodeField = (field: Field, value: unknown, context: string): unknown => {
  if (value === undefined || value === null) return zeroOf(field.kind)
  const fail = () => {
    throw new PrefsDecodeError(`json: cannot unmarshal ${jsType(value)} into Go struct field ${context}.${field.name} of type ${goType[field.kind]}`)
  }
  switch (field.kind) {
    case "string":
      return typeof value === "string" ? value : fail()
    case "bool":
      return typeof value === "boolean" ? value : fail()
    case "int":
    case "optInt":
      return typeof value === "number" && Number.isInteger(value) ? value : fail()
    case "optBool":
      return typeof value === "boolean" ? value : fail()
    case "stringList":
      return Array.isArray(value) && value.every((s) => typeof s === "string") ? (value.length === 0 ? [] : [...value]) : fail()
    case "prefixList": {
      if (!Array.isArray(value) || !value.every((s) => typeof s === "string")) return fail()
      const unparsable = value.map(parsePrefixError).find((e) => e !== undefined)
      if (unparsable !== undefined) throw new PrefsDecodeError(unparsable)
      return [...value]
    }
    case "list":
      return Array.isArray(value) ? value : fail()
    case "autoUpdate": {
      if (typeof value !== "object" || Array.isArray(value)) return fail()
      const v = value as Record<string, unknown>
      return { Check: v.Check === true, Apply: typeof v.Apply === "boolean" ? v.Apply : null }
    }
    case "appConnector": {
      if (typeof value !== "object" || Array.isArray(value)) return fail()
      return { Advertise: (value as Record<string, unknown>).Advertise === true }
    }
  }
}

const isZero = (v: unknown) => v === "" || v === false || v === 0 || v === null || (Array.isArray(v) && v.length === 0)

/** Orders the fields as Go does and drops omitempty zero fields; `Config` comes last. */
const canonical = (values: Record<string, unknown>, config: unknown): Prefs => {
  const out: Prefs = {}
  for (const f of FIELDS) {
    const v = values[f.name] ?? zeroOf(f.kind)
    if (f.omitEmpty === true && isZero(v)) continue
    out[f.name] = v
  }
  out.Config = config ?? null
  return out
}

/** `ipn.NewPrefs()`: the defaults of a new profile. */
export const newPrefs = (): Prefs =>
  canonical({ CorpDNS: true, NetfilterMode: 2, NoStatefulFiltering: true, AutoUpdate: { Check: true, Apply: null } }, null)

/** What a daemon without a profile shows (fresh, or after logout deleted the profile): NewPrefs, logged out. */
export const freshPrefs = (): Prefs => ({ ...newPrefs(), LoggedOut: true })

/** Decodes a full Prefs object (the `UpdatePrefs` of `start`, or a stored one): missing fields take Go zero values. */
export const decodePrefs = (input: unknown, context = "Prefs", config: unknown = null): Prefs => {
  if (input === null || typeof input !== "object" || Array.isArray(input)) {
    throw new PrefsDecodeError(`json: cannot unmarshal ${jsType(input)} into Go value of type ipn.Prefs`)
  }
  const raw = input as Record<string, unknown>
  const values: Record<string, unknown> = {}
  for (const f of FIELDS) values[f.name] = decodeField(f, raw[f.name], context)
  return canonical(values, config)
}

/** Applies a MaskedPrefs body: only fields whose `<Name>Set` is true change. Returns the new Prefs. */
export const applyMaskedPrefs = (current: Prefs, masked: unknown): Prefs => {
  if (masked === null || typeof masked !== "object" || Array.isArray(masked)) {
    throw new PrefsDecodeError(`json: cannot unmarshal ${jsType(masked)} into Go value of type ipn.MaskedPrefs`)
  }
  const body = masked as Record<string, unknown>
  const next: Record<string, unknown> = { ...current }
  for (const f of EDITABLE) {
    const set = body[`${f.name}Set`]
    if (f.kind === "autoUpdate") {
      if (set === undefined || set === null) continue
      if (typeof set !== "object" || Array.isArray(set)) throw new PrefsDecodeError(`json: cannot unmarshal ${jsType(set)} into Go struct field MaskedPrefs.AutoUpdateSet of type ipn.AutoUpdatePrefsMask`)
      const mask = set as Record<string, unknown>
      const value = decodeField(f, body[f.name] ?? { Check: false, Apply: null }, "MaskedPrefs.Prefs") as { Check: boolean; Apply: boolean | null }
      const old = next.AutoUpdate as { Check: boolean; Apply: boolean | null }
      next.AutoUpdate = { Check: mask.CheckSet === true ? value.Check : old.Check, Apply: mask.ApplySet === true ? value.Apply : old.Apply }
      continue
    }
    if (set !== undefined && typeof set !== "boolean") {
      throw new PrefsDecodeError(`json: cannot unmarshal ${jsType(set)} into Go struct field MaskedPrefs.${f.name}Set of type bool`)
    }
    if (set === true) next[f.name] = decodeField(f, body[f.name], "MaskedPrefs.Prefs")
  }
  return canonical(next, current.Config)
}

/**
 * The checks the daemon makes on decoded prefs (check-prefs, PATCH, start): routes with host bits
 * set, one line each; undefined when valid. Tags are not checked (the CLI checks them, not tailscaled).
 */
export const prefsError = (prefs: Prefs): string | undefined => {
  const errors = ((prefs.AdvertiseRoutes as ReadonlyArray<string> | null) ?? []).flatMap((route) => hostBitsError(route) ?? [])
  return errors.length === 0 ? undefined : errors.join("\n")
}

export const withConfig = (prefs: Prefs, config: unknown): Prefs => ({ ...prefs, Config: config ?? null })

export const stringList = (v: unknown): ReadonlyArray<string> => (Array.isArray(v) ? (v as ReadonlyArray<string>) : [])

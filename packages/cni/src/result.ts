import { InvalidNetworkConfig } from "@containerscale/core"
import { Effect, Schema } from "effect"
import { DnsConfig } from "./config.ts"
import { compareVersions } from "./version.ts"

/** A CNI result in the 1.1 shape; `ips[].version` (0.3/0.4) is accepted on input and added on output. */
export const CniInterface = Schema.Struct({
  name: Schema.String,
  mac: Schema.optional(Schema.String),
  sandbox: Schema.optional(Schema.String),
  mtu: Schema.optional(Schema.Number),
  socketPath: Schema.optional(Schema.String),
  pciID: Schema.optional(Schema.String)
})

export const CniIp = Schema.Struct({
  address: Schema.String,
  gateway: Schema.optional(Schema.String),
  interface: Schema.optional(Schema.Number),
  version: Schema.optional(Schema.String)
})

export const CniRoute = Schema.Struct({
  dst: Schema.String,
  gw: Schema.optional(Schema.String),
  mtu: Schema.optional(Schema.Number),
  advmss: Schema.optional(Schema.Number),
  priority: Schema.optional(Schema.Number),
  table: Schema.optional(Schema.Number),
  scope: Schema.optional(Schema.Number)
})

export const CniResult = Schema.Struct({
  cniVersion: Schema.optional(Schema.String),
  interfaces: Schema.optional(Schema.Array(CniInterface)),
  ips: Schema.optional(Schema.Array(CniIp)),
  routes: Schema.optional(Schema.Array(CniRoute)),
  dns: Schema.optional(DnsConfig)
})
export type CniResult = typeof CniResult.Type

const decodeResult = Schema.decodeUnknownEffect(CniResult)

/** A previous plugin's result; an error object (`code`, `msg`) decodes as a result too, and is refused. */
export const decodePrevResult = (input: unknown): Effect.Effect<CniResult, InvalidNetworkConfig | Schema.SchemaError> =>
  typeof input === "object" && input !== null && "code" in input
    ? Effect.fail(new InvalidNetworkConfig({ message: `"prevResult" is a CNI error object, not a result` }))
    : decodeResult(input)

const only11 = {
  interface: ["mtu", "socketPath", "pciID"],
  route: ["mtu", "advmss", "priority", "table", "scope"]
} as const

const without = <T extends object>(o: T, keys: ReadonlyArray<string>): T =>
  Object.fromEntries(Object.entries(o).filter(([k]) => !keys.includes(k))) as T

const isEmptyDns = (dns: CniResult["dns"]) =>
  dns === undefined || Object.values(dns).every((v) => v === undefined || (Array.isArray(v) && v.length === 0) || v === "")

/** The result as the given spec version writes it: `ips[].version` before 1.0.0, 1.1 fields only from 1.1.0. */
export const encodeResult = (result: CniResult, cniVersion: string): Record<string, unknown> => {
  const legacy = compareVersions(cniVersion, "1.0.0") < 0
  const has11 = compareVersions(cniVersion, "1.1.0") >= 0
  const out: Record<string, unknown> = { cniVersion }
  if (result.interfaces !== undefined) {
    out.interfaces = has11 ? result.interfaces : result.interfaces.map((i) => without(i, only11.interface))
  }
  if (result.ips !== undefined) {
    out.ips = result.ips.map(({ version: _, ...ip }) =>
      legacy ? { version: ip.address.includes(":") ? "6" : "4", ...ip } : ip
    )
  }
  if (result.routes !== undefined) {
    out.routes = has11 ? result.routes : result.routes.map((r) => without(r, only11.route))
  }
  if (!isEmptyDns(result.dns)) out.dns = result.dns
  return out
}

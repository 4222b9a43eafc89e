import { validateNetworkName } from "@containerscale/core"
import { Data, Effect, Schema, SchemaIssue } from "effect"

/**
 * Netavark's plugin protocol: what `create`, `setup` and `teardown` read on stdin, decoded with
 * Schema, and the one error an invalid request gets. Netavark before 2.0 sends null for absent
 * optional fields, 2.0 omits them: both decode alike.
 */

/** A request the plugin cannot work with; the message says what to fix. */
export class InvalidRequest extends Data.TaggedError("InvalidRequest")<{ readonly message: string }> {}

const Optional = <S extends Schema.Top>(schema: S) => Schema.optional(Schema.NullOr(schema))
const NonEmpty = Schema.String.check(Schema.isNonEmpty())

export const Subnet = Schema.Struct({ subnet: Schema.String, gateway: Optional(Schema.String) })

export const Route = Schema.Struct({ destination: Schema.String, gateway: Optional(Schema.String), route_type: Optional(Schema.String) })

/**
 * A network's name, by the rule CNI's names follow (Podman's own: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at
 * most 255 bytes): the core records it in the host ends' aliases and files, where a `:` or a `/`
 * would name another network.
 */
const NetworkName = Schema.String.check(Schema.makeFilter((name: string) => validateNetworkName(name)?.message))

/** The network as `podman network create` made it; keys the plugin does not read pass through untouched. */
export const Network = Schema.Struct({
  name: NetworkName,
  id: NonEmpty,
  driver: NonEmpty,
  subnets: Optional(Schema.Array(Subnet)),
  routes: Optional(Schema.Array(Route)),
  options: Optional(Schema.Record(Schema.String, Schema.String)),
  ipam_options: Optional(Schema.Record(Schema.String, Schema.String))
})
export type Network = typeof Network.Type

export const Call = Schema.Struct({
  container_id: NonEmpty,
  container_name: Optional(Schema.String),
  port_mappings: Optional(Schema.Array(Schema.Unknown)),
  network: Network,
  network_options: Schema.Struct({
    interface_name: Schema.String.check(Schema.isPattern(/^[A-Za-z0-9_.-]{1,15}$/, { message: "a valid interface name" })),
    static_ips: Optional(Schema.Array(Schema.String)),
    static_mac: Optional(Schema.String)
  })
})
export type Call = typeof Call.Type

let formatIssue: ReturnType<typeof SchemaIssue.makeFormatterStandardSchemaV1> | undefined

const pathOf = (path: ReadonlyArray<unknown>) =>
  path.map((k, i) => { const key = typeof k === "object" && k !== null && "key" in k ? (k as { key: unknown }).key : k; return typeof key === "number" ? `[${key}]` : i === 0 ? String(key) : `.${String(key)}` }).join("")

/** Decodes stdin's JSON; the error names each field as netavark's JSON does (`"network.subnets[0].subnet"`). */
export const decodeInput = <S extends Schema.Top>(schema: S & Schema.Codec<S["Type"], S["Encoded"], never, never>, text: string, what: string) =>
  Effect.gen(function*() {
    if (text.trim() === "") return yield* new InvalidRequest({ message: `${what}: expected a JSON object on stdin, got nothing` })
    const json = yield* Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: (e) => new InvalidRequest({ message: `${what}: stdin is not valid JSON: ${(e as Error).message}` })
    })
    if (typeof json !== "object" || json === null || Array.isArray(json)) {
      return yield* new InvalidRequest({ message: `${what}: stdin must be a JSON object` })
    }
    const value = yield* Schema.decodeUnknownEffect(schema, { errors: "all" })(json).pipe(
      Effect.mapError((e) =>
        new InvalidRequest({
          message: `${what}: ` + (formatIssue ??= SchemaIssue.makeFormatterStandardSchemaV1())(e.issue).issues
            .map((i) => `${i.path === undefined || i.path.length === 0 ? "" : `"${pathOf(i.path)}": `}${i.message}`)
            .join("; ")
        })
      )
    )
    return { value: value as S["Type"], json: json as Readonly<Record<string, unknown>> }
  })

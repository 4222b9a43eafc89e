import { Data, Effect, Schema } from "effect"
import { describeIssue } from "@containerscale/core/internal"

/**
 * The libnetwork remote driver requests the NetworkDriver half reads, decoded with Schema. dockerd
 * is written in Go: absent maps and lists come as null, and every call carries more than is typed
 * here (the rest is ignored).
 */

/** A request the driver cannot serve; the message is what `docker` shows. */
export class DriverError extends Data.TaggedError("DriverError")<{ readonly message: string }> {}

const Optional = <S extends Schema.Top>(schema: S) => Schema.optional(Schema.NullOr(schema))
/**
 * A network or endpoint ID (dockerd's are 64 hex digits). A network is named `docker-` and the first
 * 12 of its ID in the core, so an ID follows the rule of CNI's network names: nothing that would
 * name another network in a host end's alias or a store's path.
 */
const Id = Schema.String.check(Schema.isPattern(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, {
  message: `an ID of at most 128 letters, digits, "_", "." and "-", starting with a letter or digit`
}))

const IpamData = Schema.Struct({ AddressSpace: Optional(Schema.String), Pool: Optional(Schema.String), Gateway: Optional(Schema.String) })

export const CreateNetwork = Schema.Struct({
  NetworkID: Id,
  Options: Optional(Schema.Struct({
    "com.docker.network.generic": Optional(Schema.Record(Schema.String, Schema.Unknown)),
    "com.docker.network.internal": Optional(Schema.Boolean)
  })),
  IPv4Data: Optional(Schema.Array(IpamData)),
  IPv6Data: Optional(Schema.Array(IpamData))
})

export const NetworkRef = Schema.Struct({ NetworkID: Id })

export const EndpointRef = Schema.Struct({ EndpointID: Id })

export const CreateEndpoint = Schema.Struct({
  NetworkID: Id,
  EndpointID: Id,
  Interface: Optional(Schema.Struct({ Address: Optional(Schema.String) }))
})

export const Join = Schema.Struct({ NetworkID: Id, EndpointID: Id, SandboxKey: Optional(Schema.String) })

/** Decodes a request's body; the error names the field and what it should be. */
export const decodeRequest = <S extends Schema.Top>(schema: S & Schema.Codec<S["Type"], S["Encoded"], never, never>) => {
  const decode = Schema.decodeUnknownEffect(schema, { errors: "all" })
  return (body: unknown): Effect.Effect<S["Type"], DriverError> =>
    decode(body).pipe(Effect.mapError((e) => new DriverError({ message: `invalid request: ${describeIssue(e.issue)}` })))
}

/** The IpamDriver requests. */
export const RequestPool = Schema.Struct({
  AddressSpace: Optional(Schema.String),
  Pool: Optional(Schema.String),
  SubPool: Optional(Schema.String),
  V6: Optional(Schema.Boolean)
})

export const ReleasePool = Schema.Struct({ PoolID: Optional(Schema.String) })

export const RequestAddress = Schema.Struct({
  PoolID: Optional(Schema.String),
  Address: Optional(Schema.String),
  Options: Optional(Schema.Record(Schema.String, Schema.Unknown))
})

export const ReleaseAddress = Schema.Struct({ PoolID: Optional(Schema.String), Address: Optional(Schema.String) })

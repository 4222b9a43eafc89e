import {
  InvalidNetworkConfig,
  IpamSection,
  type Pool,
  RangeConfig,
  resolvePool
} from "@containerscale/core"
import { describeIssue } from "@containerscale/core/internal"
import { Effect, Schema } from "effect"

export const AttachmentRef = Schema.Struct({
  containerID: Schema.String,
  ifname: Schema.String
})

export const DnsConfig = Schema.Struct({
  nameservers: Schema.optional(Schema.Array(Schema.String)),
  domain: Schema.optional(Schema.String),
  search: Schema.optional(Schema.Array(Schema.String)),
  options: Schema.optional(Schema.Array(Schema.String))
})

/**
 * A CNI network configuration as a plugin receives it on stdin. Only the keys the project reads
 * are typed; every other key is tolerated (and kept in the raw object for pass-through).
 */
export const NetworkConfig = Schema.Struct({
  cniVersion: Schema.String,
  name: Schema.String,
  type: Schema.String,
  ipam: Schema.optional(IpamSection),
  dns: Schema.optional(DnsConfig),
  runtimeConfig: Schema.optional(Schema.Struct({
    ips: Schema.optional(Schema.Array(Schema.String)),
    ipRanges: Schema.optional(Schema.Array(Schema.Array(RangeConfig)))
  })),
  args: Schema.optional(Schema.Struct({
    cni: Schema.optional(Schema.Struct({
      ips: Schema.optional(Schema.Array(Schema.String))
    }))
  })),
  prevResult: Schema.optional(Schema.Unknown),
  "cni.dev/valid-attachments": Schema.optional(Schema.Array(AttachmentRef)),
  "cni.dev/attachments": Schema.optional(Schema.Array(AttachmentRef))
})
export type NetworkConfig = typeof NetworkConfig.Type

const decodeNetworkConfigEffect = Schema.decodeUnknownEffect(NetworkConfig, { errors: "all" })

export const decodeNetworkConfig = (input: unknown) =>
  decodeNetworkConfigEffect(input).pipe(
    Effect.mapError((e) => new InvalidNetworkConfig({ message: `invalid network configuration: ${describeIssue(e.issue)}` }))
  )

/** The pool of an `ipam` section; `runtimeConfig.ipRanges` (the `ipRanges` capability) replaces its ranges. */
export const poolOf = (config: NetworkConfig, section: IpamSection): Effect.Effect<Pool, InvalidNetworkConfig> => {
  const ipRanges = config.runtimeConfig?.ipRanges
  return Effect.fromResult(
    resolvePool(ipRanges !== undefined && ipRanges.length > 0 ? { ...section, ranges: ipRanges, subnet: undefined } : section)
  )
}

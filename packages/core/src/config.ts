import { Schema } from "effect"
import { PoolConfig } from "./pool.ts"

/**
 * An IPAM configuration: the pool (host-local's keys plus `strategy` and `exclude`, see
 * PoolConfig), where its store lives, and `type`, the IPAM that serves it (CNI's `ipam.type`).
 */
export const IpamSection = Schema.Struct({
  type: Schema.String,
  dataDir: Schema.optional(Schema.String),
  ...PoolConfig.fields
})
export type IpamSection = typeof IpamSection.Type

import { Schema } from "effect"
import { PoolConfig } from "./pool.ts"

/** What a data directory must be: the same path from every working directory the plugin runs in. */
export const DATA_DIR_RULE = `write an absolute path, e.g. "dataDir": "/var/lib/containerscale/ipam" ` +
  `(a relative or empty one names another store in each working directory, which hands out the same address twice)`

/**
 * An IPAM configuration: the pool (host-local's keys plus `strategy` and `exclude`, see
 * PoolConfig), where its store lives, and `type`, the IPAM that serves it (CNI's `ipam.type`).
 */
export const IpamSection = Schema.Struct({
  type: Schema.String,
  /** where the network's store lives (`<dataDir>/<network>`): an absolute path */
  dataDir: Schema.optional(Schema.String.check(Schema.isPattern(/^\//, { message: `not an absolute path: ${DATA_DIR_RULE}` }))),
  ...PoolConfig.fields
})
export type IpamSection = typeof IpamSection.Type

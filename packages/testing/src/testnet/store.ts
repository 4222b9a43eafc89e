import * as fs from "node:fs"
import * as path from "node:path"
import { Schema } from "effect"
import { describeIssue } from "./issue.ts"

/** Everything the testnet remembers across restarts, as `<stateDir>/testnet.json` holds it. */

export const StoredUser = Schema.Struct({
  id: Schema.Number,
  name: Schema.String,
  displayName: Schema.String,
  email: Schema.String,
  profilePicUrl: Schema.String,
  createdAt: Schema.String
})
export type StoredUser = typeof StoredUser.Type

export const StoredPreAuthKey = Schema.Struct({
  id: Schema.Number,
  prefix: Schema.String,
  key: Schema.String,
  /** null for a tagged key without a user (0.28+) */
  userId: Schema.NullOr(Schema.Number),
  reusable: Schema.Boolean,
  ephemeral: Schema.Boolean,
  used: Schema.Boolean,
  expiration: Schema.String,
  createdAt: Schema.String,
  aclTags: Schema.Array(Schema.String)
})
export type StoredPreAuthKey = typeof StoredPreAuthKey.Type

export const StoredApiKey = Schema.Struct({
  id: Schema.Number,
  prefix: Schema.String,
  key: Schema.String,
  expiration: Schema.String,
  createdAt: Schema.String,
  lastSeen: Schema.NullOr(Schema.String),
  /** the key the testnet hands out as `apiKey` */
  bootstrap: Schema.Boolean
})
export type StoredApiKey = typeof StoredApiKey.Type

export const StoredNode = Schema.Struct({
  /** also picks the addresses: ipv4Of(id), ipv6Of(id) */
  id: Schema.Number,
  nodeKey: Schema.String,
  machineKey: Schema.String,
  discoKey: Schema.String,
  hostname: Schema.String,
  givenName: Schema.String,
  /** an admin renamed it: givenName no longer follows the hostname */
  renamed: Schema.Boolean,
  userId: Schema.NullOr(Schema.Number),
  tags: Schema.Array(Schema.String),
  ephemeral: Schema.Boolean,
  advertisedRoutes: Schema.Array(Schema.String),
  approvedRoutes: Schema.Array(Schema.String),
  preAuthKeyId: Schema.NullOr(Schema.Number),
  createdAt: Schema.String,
  lastSeen: Schema.NullOr(Schema.String),
  expiry: Schema.NullOr(Schema.String)
})
export type StoredNode = typeof StoredNode.Type

export const StoredState = Schema.Struct({
  version: Schema.Literal(1),
  nextIds: Schema.Struct({ user: Schema.Number, preAuthKey: Schema.Number, apiKey: Schema.Number, node: Schema.Number }),
  users: Schema.Array(StoredUser),
  preAuthKeys: Schema.Array(StoredPreAuthKey),
  apiKeys: Schema.Array(StoredApiKey),
  nodes: Schema.Array(StoredNode)
})
export type StoredState = typeof StoredState.Type

export const stateFileOf = (stateDir: string) => path.join(stateDir, "testnet.json")

const decodeStoredState = Schema.decodeUnknownResult(StoredState)

/** The saved state, or undefined when there is none yet. */
export const loadState = (file: string): StoredState | undefined => {
  let text: string
  try {
    text = fs.readFileSync(file, "utf8")
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined
    throw error
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    throw new Error(`${file} is not valid JSON; remove it to start the testnet with a fresh tailnet`)
  }
  const decoded = decodeStoredState(json)
  if (decoded._tag === "Failure") {
    throw new Error(`${file} is not a testnet state file (${describeIssue(decoded.failure.issue)}); remove it to start fresh`)
  }
  return decoded.success
}

/** Writes the state atomically (temp file, then rename), readable by the owner only: it holds keys. */
export const saveState = (file: string, state: StoredState): void => {
  const temp = `${file}.${process.pid}.tmp`
  fs.writeFileSync(temp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 })
  fs.chmodSync(temp, 0o600)
  fs.renameSync(temp, file)
}

/** Helpers for answering the way Go's encoding/json does. */

/** Go's zero `time.Time`. */
export const ZERO_TIME = "0001-01-01T00:00:00Z"

/** The zero `key.NodePublic`, shown before the node has a key. */
export const ZERO_NODE_KEY = `nodekey:${"0".repeat(64)}`

/** A Go slice or map: `null` when empty, the way a nil slice encodes. */
export const nilIfEmpty = <A>(items: ReadonlyArray<A> | undefined): ReadonlyArray<A> | null =>
  items === undefined || items.length === 0 ? null : items

export const nilIfEmptyMap = <A>(map: Record<string, A>): Record<string, A> | null =>
  Object.keys(map).length === 0 ? null : map

/** `json.NewEncoder(w).Encode(v)` with `SetIndent("", "\t")`: tab-indented, with a trailing newline. */
export const encodeIndented = (value: unknown): string => `${escapeHtml(JSON.stringify(value, null, "\t"))}\n`

/** `json.NewEncoder(w).Encode(v)`: compact, with a trailing newline. */
export const encodeCompact = (value: unknown): string => `${escapeHtml(JSON.stringify(value))}\n`

/** Go escapes <, > and & inside strings by default. */
const escapeHtml = (json: string): string =>
  json.replace(/[<>&]/g, (c) => `\\u00${c.charCodeAt(0).toString(16).padStart(2, "0")}`)

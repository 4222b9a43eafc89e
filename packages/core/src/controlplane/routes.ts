import type * as net from "node:net"
import type { Effect } from "effect"
import type { ControlPlaneError } from "./errors.ts"
import type { ApproveRoutesResult, NodeRoutes, UnapproveRoutesResult } from "./types.ts"

/**
 * What the two generations' route approval have in common: the interface each implements
 * (`routesOnNode.ts` for 0.26+, `routeRows.ts` for ≤0.25) and the prefix helpers. `Headscale.ts`
 * checks ids and prefixes, picks the generation and runs one change at a time.
 */

export interface RouteApproval {
  /** `wanted`: distinct, checked prefixes */
  readonly approve: (nodeId: string, wanted: ReadonlyArray<string>) => Effect.Effect<ApproveRoutesResult, ControlPlaneError>
  readonly unapprove: (nodeId: string, unwanted: ReadonlyArray<string>) => Effect.Effect<UnapproveRoutesResult, ControlPlaneError>
  /** the node id is checked */
  readonly routesOf: (nodeId: string) => Effect.Effect<NodeRoutes, ControlPlaneError>
}

export const isExit = (prefix: string) => prefix === "0.0.0.0/0" || prefix === "::/0"

/** Whether the text is a CIDR prefix (`10.1.0.0/24`, `fd00::/64`); node:net is loaded on first use. */
export const isPrefix = (text: string): boolean => {
  const match = /^([^/]+)\/(\d{1,3})$/.exec(text)
  if (match === null) return false
  const family = (process.getBuiltinModule("node:net") as typeof net).isIP(match[1]!)
  const bits = Number(match[2])
  return (family === 4 && bits <= 32) || (family === 6 && bits <= 128 && !match[1]!.includes("%"))
}

export const unique = (items: ReadonlyArray<string>) => [...new Set(items)]

import { ControlPlane } from "@containerscale/core/controlplane"
import { Effect, Schedule } from "effect"
import type { Approver } from "./router.ts"

/**
 * Route approval at the Headscale of the context's `ControlPlane`, for exactly this node (both API
 * generations, see the core's client). Headscale 0.25 and older only has a route row once the
 * node's advertisement reached it, so a "not advertised yet" answer is retried for a few seconds
 * before the pass gives up.
 */
export const headscaleApprover: Effect.Effect<Approver, never, ControlPlane> = Effect.map(Effect.service(ControlPlane), (headscale) => ({
  approve: (nodeId, routes) =>
    headscale.approveRoutes(nodeId, routes).pipe(
      Effect.retry({ while: (e) => e._tag === "RouteNotAdvertised", schedule: Schedule.spaced("100 millis"), times: 50 }),
      Effect.map((r) =>
        r.approved.length === 0
          ? `already approved at Headscale ${r.generation}: ${r.alreadyApproved.join(", ")}`
          : `approved ${r.approved.join(", ")} for node ${r.nodeId} at Headscale ${r.generation}`
      )
    ),
  withdraw: (nodeId, routes) =>
    headscale.unapproveRoutes(nodeId, routes).pipe(
      Effect.map((r) =>
        r.unapproved.length === 0
          ? `not approved at Headscale ${r.generation}: ${r.notApproved.join(", ")}`
          : `took back ${r.unapproved.join(", ")} from node ${r.nodeId} at Headscale ${r.generation}`
      )
    ),
  serving: (nodeId) => headscale.routesOf(nodeId).pipe(Effect.map((r) => r.serving))
}))

import { Context, Effect, Layer, Semaphore } from "effect"
import type { ControlPlaneError } from "./errors.ts"
import { type Call, makeHeadscaleHttp } from "./http.ts"
import { makeNodes } from "./nodes.ts"
import { makePreAuthKeys } from "./preAuthKeys.ts"
import { nodeRoutesCall, routeRows } from "./routeRows.ts"
import { isPrefix, type RouteApproval, unique } from "./routes.ts"
import { routesOnNode } from "./routesOnNode.ts"
import type {
  ApproveRoutesResult,
  HeadscaleClient,
  HeadscaleGeneration,
  HeadscaleOptions,
  UnapproveRoutesResult
} from "./types.ts"
import { makeVersion } from "./version.ts"

export type * from "./types.ts"

/**
 * A version-aware client of Headscale's admin REST API (`/api/v1`, Bearer API key), over the
 * shared HTTP transport. It finds out once per client which generation it talks to (`GET
 * /version`, else a probe of the ≤0.25 routes API: `version.ts`) and takes that generation's path
 * for route approval (`routesOnNode.ts` for 0.26+, `routeRows.ts` for ≤0.25), route listing and
 * pre-auth keys. Every HTTP exchange is bounded by the client's timeout; every answer is decoded
 * with Schema; the API key is `Redacted`, sent only in the Authorization header, and scrubbed from
 * anything the server says before it reaches an error (`http.ts`).
 */

/** Builds a client for one server; no I/O until a call runs. */
export const makeHeadscale = (options: HeadscaleOptions): HeadscaleClient => {
  const http = makeHeadscaleHttp(options)
  const version = makeVersion(http)
  const approvals: Record<HeadscaleGeneration, RouteApproval> = { "0.26+": routesOnNode(http), legacy: routeRows(http) }
  /** approvals are read-modify-write: one at a time per client, so two calls do not lose each other's additions */
  const approving = Semaphore.makeUnsafe(1)

  const checkRoutes = (call: Call, routes: ReadonlyArray<string>) => {
    const bad = routes.filter((route) => !isPrefix(route))
    return bad.length === 0
      ? Effect.void
      : Effect.fail(http.rejectLocally(call, `not CIDR prefixes: ${bad.map((r) => JSON.stringify(r)).join(", ")}; give routes like 10.1.0.0/24`))
  }

  /** Checks the id and routes, finds the generation, and runs one route change at a time. */
  const changeRoutes = <A>(
    nodeId: string,
    routes: ReadonlyArray<string>,
    nothing: (generation: HeadscaleGeneration) => A,
    change: (approval: RouteApproval, routes: ReadonlyArray<string>) => Effect.Effect<A, ControlPlaneError>
  ): Effect.Effect<A, ControlPlaneError> =>
    Effect.gen(function*() {
      const call: Call = { method: "POST", path: `/api/v1/node/${nodeId}/approve_routes` }
      yield* http.checkId(call, "node id", nodeId)
      yield* checkRoutes(call, routes)
      const { generation } = yield* version()
      const distinct = unique(routes)
      if (distinct.length === 0) return nothing(generation)
      return yield* approving.withPermit(change(approvals[generation], distinct))
    })

  const approveRoutes: HeadscaleClient["approveRoutes"] = (nodeId, routes) =>
    changeRoutes<ApproveRoutesResult>(
      nodeId,
      routes,
      (generation) => ({ generation, nodeId, approved: [], alreadyApproved: [] }),
      (approval, wanted) => approval.approve(nodeId, wanted)
    )

  const unapproveRoutes: HeadscaleClient["unapproveRoutes"] = (nodeId, routes) =>
    changeRoutes<UnapproveRoutesResult>(
      nodeId,
      routes,
      (generation) => ({ generation, nodeId, unapproved: [], notApproved: [] }),
      (approval, unwanted) => approval.unapprove(nodeId, unwanted)
    )

  const routesOf: HeadscaleClient["routesOf"] = (nodeId) =>
    http.checkId(nodeRoutesCall(nodeId), "node id", nodeId).pipe(
      Effect.flatMap(() => version()),
      Effect.flatMap(({ generation }) => approvals[generation].routesOf(nodeId))
    )

  return {
    url: http.url,
    version,
    ...makeNodes(http),
    approveRoutes,
    unapproveRoutes,
    routesOf,
    createPreAuthKey: makePreAuthKeys(http, version)
  }
}

/** One Headscale admin API client for the program; `ControlPlane.layer(options)` builds it (no I/O). */
export class ControlPlane extends Context.Service<ControlPlane, HeadscaleClient>()("@containerscale/core/ControlPlane") {
  static readonly layer = (options: HeadscaleOptions): Layer.Layer<ControlPlane> => Layer.sync(ControlPlane, () => makeHeadscale(options))
}

import { Effect } from "effect"
import { RouteNotAdvertised } from "./errors.ts"
import type { Call, HeadscaleHttp } from "./http.ts"
import { isExit, type RouteApproval, unique } from "./routes.ts"
import { EmptyAnswer, type Route, RoutesAnswer } from "./schemas.ts"

/**
 * Route approval of Headscale up to 0.25: routes are rows, one per node and advertised prefix,
 * created once the node announces the prefix, and approving one enables its row by id
 * (`POST /api/v1/routes/{id}/enable`, `…/disable`). So a prefix the node has not advertised yet
 * cannot be approved: that fails with RouteNotAdvertised, with nothing enabled, to retry once the
 * node announced it. Enabling one exit route enables both.
 */

export const nodeRoutesCall = (nodeId: string): Call => ({ method: "GET", path: `/api/v1/node/${nodeId}/routes` })

export const routeRows = (http: HeadscaleHttp): RouteApproval => {
  /** This node's rows (the server filters; the embedded node id is checked too). */
  const rowsOf = (nodeId: string) =>
    http.json(nodeRoutesCall(nodeId), RoutesAnswer).pipe(
      Effect.map((answer) => answer.routes.filter((row) => row.node === undefined || row.node === null || row.node.id === nodeId))
    )

  const approve: RouteApproval["approve"] = (nodeId, wanted) =>
    Effect.gen(function*() {
      const rows = yield* rowsOf(nodeId)
      const alreadyApproved: Array<string> = []
      const toEnable: Array<Route> = []
      const notAdvertised: Array<string> = []
      for (const prefix of wanted) {
        const matching = rows.filter((row) => row.prefix === prefix && row.advertised)
        if (matching.some((row) => row.enabled)) alreadyApproved.push(prefix)
        else if (matching[0] !== undefined) toEnable.push(matching[0])
        else notAdvertised.push(prefix)
      }
      if (notAdvertised.length > 0) {
        return yield* new RouteNotAdvertised({
          ...http.fields(nodeRoutesCall(nodeId)),
          nodeId,
          routes: notAdvertised,
          message: `node ${nodeId} has not advertised ${notAdvertised.join(", ")} yet, and Headscale ≤0.25 can only enable ` +
            `an advertised route; nothing was enabled. Retry once the node announces it (tailscaled: AdvertiseRoutes)`
        })
      }
      // enabling one exit route enables both, so the second may already be on; the server takes it again
      for (const row of toEnable) yield* http.json({ method: "POST", path: `/api/v1/routes/${row.id}/enable` }, EmptyAnswer)
      return { generation: "legacy" as const, nodeId, approved: toEnable.map((row) => row.prefix), alreadyApproved }
    })

  const unapprove: RouteApproval["unapprove"] = (nodeId, unwanted) =>
    Effect.gen(function*() {
      const rows = yield* rowsOf(nodeId)
      const toDisable = rows.filter((row) => row.enabled && unwanted.includes(row.prefix))
      for (const row of toDisable) yield* http.json({ method: "POST", path: `/api/v1/routes/${row.id}/disable` }, EmptyAnswer)
      const unapproved = unique(toDisable.map((row) => row.prefix))
      return { generation: "legacy" as const, nodeId, unapproved, notApproved: unwanted.filter((route) => !unapproved.includes(route)) }
    })

  const routesOf: RouteApproval["routesOf"] = (nodeId) =>
    Effect.map(rowsOf(nodeId), (rows) => ({
      advertised: unique(rows.filter((row) => row.advertised).map((row) => row.prefix)),
      approved: unique(rows.filter((row) => row.advertised && row.enabled).map((row) => row.prefix)),
      serving: unique(
        rows.filter((row) => row.advertised && row.enabled && (row.isPrimary === true || isExit(row.prefix))).map((row) => row.prefix)
      )
    }))

  return { approve, unapprove, routesOf }
}

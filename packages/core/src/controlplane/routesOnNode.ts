import { Effect } from "effect"
import { ControlPlaneNotFound } from "./errors.ts"
import type { Call, HeadscaleHttp } from "./http.ts"
import { nodeCall } from "./nodes.ts"
import { isExit, type RouteApproval, unique } from "./routes.ts"
import { NodeAnswer, NodesAnswer } from "./schemas.ts"

/**
 * Route approval of Headscale 0.26+: the approved prefixes are a set on the node, replaced as a
 * whole by `POST /api/v1/node/{id}/approve_routes`. So a change is a read-modify-write of the
 * node's set (the caller runs one at a time per client; another writer of the same node in
 * between can still lose its change), and the answer is checked to hold the change. Approving
 * before the node announces a prefix is fine, and a prefix stays approved after the node stops
 * announcing it. Headscale approves the two exit routes as a pair, so unapproving one drops both.
 */

const approveCall = (nodeId: string, routes: ReadonlyArray<string>): Call => ({
  method: "POST",
  path: `/api/v1/node/${nodeId}/approve_routes`,
  body: { routes }
})

export const routesOnNode = (http: HeadscaleHttp): RouteApproval => {
  /** A node's approved routes, read fresh before they are replaced as a whole. */
  const approvedRoutesOf = (nodeId: string) =>
    Effect.gen(function*() {
      const call = nodeCall(nodeId)
      const current = (yield* http.json(call, NodeAnswer)).node
      if (current.approvedRoutes === undefined) {
        return yield* http.unexpected(call, "the node has no approvedRoutes field, which 0.26+ always sends", JSON.stringify({ id: current.id }))
      }
      return current.approvedRoutes
    })

  const approve: RouteApproval["approve"] = (nodeId, wanted) =>
    Effect.gen(function*() {
      const had = yield* approvedRoutesOf(nodeId)
      const alreadyApproved = wanted.filter((route) => had.includes(route))
      const approved = wanted.filter((route) => !had.includes(route))
      if (approved.length === 0) return { generation: "0.26+" as const, nodeId, approved, alreadyApproved }
      const post = approveCall(nodeId, unique([...had, ...approved]))
      const after = (yield* http.json(post, NodeAnswer)).node
      const missing = wanted.filter((route) => !(after.approvedRoutes ?? []).includes(route))
      if (missing.length > 0) {
        return yield* http.unexpected(post, `the node's approved routes lack ${missing.join(", ")} after approval`, JSON.stringify(after.approvedRoutes ?? null))
      }
      return { generation: "0.26+" as const, nodeId, approved, alreadyApproved }
    })

  const unapprove: RouteApproval["unapprove"] = (nodeId, unwanted) =>
    Effect.gen(function*() {
      const had = yield* approvedRoutesOf(nodeId)
      const dropped = unwanted.some(isExit) ? unique([...unwanted, "0.0.0.0/0", "::/0"]) : unwanted
      const unapproved = had.filter((route) => dropped.includes(route))
      const notApproved = unwanted.filter((route) => !had.includes(route))
      if (unapproved.length === 0) return { generation: "0.26+" as const, nodeId, unapproved, notApproved }
      const post = approveCall(nodeId, had.filter((route) => !dropped.includes(route)))
      const after = (yield* http.json(post, NodeAnswer)).node
      const left = (after.approvedRoutes ?? []).filter((route) => dropped.includes(route))
      if (left.length > 0) {
        return yield* http.unexpected(post, `the node's approved routes still hold ${left.join(", ")} after unapproval`, JSON.stringify(after.approvedRoutes ?? null))
      }
      return { generation: "0.26+" as const, nodeId, unapproved, notApproved }
    })

  const routesOf: RouteApproval["routesOf"] = (nodeId) =>
    Effect.gen(function*() {
      // a single GET leaves subnetRoutes empty; the list fills it
      const listCall: Call = { method: "GET", path: "/api/v1/node" }
      const found = (yield* http.json(listCall, NodesAnswer)).nodes.find((candidate) => candidate.id === nodeId)
      if (found === undefined) {
        return yield* new ControlPlaneNotFound({ ...http.fields(listCall), message: `Headscale at ${http.url} has no node ${nodeId}` })
      }
      return { advertised: found.availableRoutes ?? [], approved: found.approvedRoutes ?? [], serving: found.subnetRoutes ?? [] }
    })

  return { approve, unapprove, routesOf }
}

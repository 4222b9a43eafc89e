import { Effect } from "effect"
import type { Call, HeadscaleHttp } from "./http.ts"
import { unique } from "./routes.ts"
import { EmptyAnswer, type Node, NodeAnswer, NodesAnswer } from "./schemas.ts"
import type { HeadscaleClient, HeadscaleNode } from "./types.ts"

/**
 * Nodes, the same in both generations but for their fields: tags are `tags` from 0.28, else the
 * forced and valid tags; route fields exist from 0.26 (up to 0.25 routes are rows: `routeRows.ts`).
 */

export const nodeCall = (id: string): Call => ({ method: "GET", path: `/api/v1/node/${id}` })

const toNode = (node: Node): HeadscaleNode => ({
  id: node.id,
  nodeKey: node.nodeKey,
  machineKey: node.machineKey,
  name: node.name,
  givenName: node.givenName,
  ipAddresses: node.ipAddresses,
  user: node.user === undefined || node.user === null ? undefined : { id: node.user.id, name: node.user.name },
  tags: node.tags ?? unique([...(node.forcedTags ?? []), ...(node.validTags ?? [])]).sort(),
  online: node.online ?? false,
  lastSeen: node.lastSeen ?? undefined,
  expiry: node.expiry ?? undefined,
  createdAt: node.createdAt ?? undefined,
  advertisedRoutes: node.availableRoutes,
  approvedRoutes: node.approvedRoutes
})

export const makeNodes = (http: HeadscaleHttp): Pick<HeadscaleClient, "nodes" | "node" | "deleteNode"> => ({
  nodes: (opts) =>
    http.json(
      { method: "GET", path: "/api/v1/node", query: opts?.user === undefined ? undefined : { user: opts.user } },
      NodesAnswer
    ).pipe(Effect.map((answer) => answer.nodes.map(toNode))),

  node: (id) => {
    const call = nodeCall(id)
    return http.checkId(call, "node id", id).pipe(
      Effect.andThen(http.json(call, NodeAnswer)),
      Effect.map((answer) => toNode(answer.node))
    )
  },

  deleteNode: (id) => {
    const call: Call = { method: "DELETE", path: `/api/v1/node/${id}` }
    return http.checkId(call, "node id", id).pipe(
      Effect.andThen(http.json(call, EmptyAnswer)),
      Effect.as(true),
      Effect.catchTag("ControlPlaneNotFound", () => Effect.succeed(false))
    )
  }
})

import { Effect, Schema } from "effect"
import * as fs from "node:fs"
import * as https from "node:https"
import { AgentFailure } from "./errors.ts"

/**
 * The node's pod CIDRs from Kubernetes: `GET /api/v1/nodes/<name>` through the in-cluster API
 * (KUBERNETES_SERVICE_HOST/PORT, the service account's token and CA), `spec.podCIDRs` or the older
 * `spec.podCIDR`. The token is read for each request and never logged.
 */

export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

const NodeObject = Schema.Struct({
  spec: Schema.optional(Schema.Struct({
    podCIDR: Schema.optional(Schema.String),
    podCIDRs: Schema.optional(Schema.Array(Schema.String))
  }))
})

export interface InCluster {
  readonly host: string
  readonly port: string
  readonly serviceAccountDir: string
}

export const inClusterFromEnv = (env: Readonly<Record<string, string | undefined>>): InCluster | undefined => {
  const host = env["KUBERNETES_SERVICE_HOST"]
  return host === undefined
    ? undefined
    : { host, port: env["KUBERNETES_SERVICE_PORT"] ?? "443", serviceAccountDir: env["CONTAINERSCALE_SERVICE_ACCOUNT_DIR"] ?? SERVICE_ACCOUNT_DIR }
}

const failure = (message: string) => new AgentFailure({ message })

export const podCidrsOfNode = (cluster: InCluster, nodeName: string): Effect.Effect<ReadonlyArray<string>, AgentFailure> =>
  Effect.gen(function*() {
    const [token, ca] = yield* Effect.try({
      try: () => [
        fs.readFileSync(`${cluster.serviceAccountDir}/token`, "utf8").trim(),
        fs.readFileSync(`${cluster.serviceAccountDir}/ca.crt`)
      ] as const,
      catch: (e) => failure(`cannot read the service account in ${cluster.serviceAccountDir}: ${(e as Error).message}`)
    })
    const where = `https://${cluster.host}:${cluster.port}/api/v1/nodes/${nodeName}`
    const answer = yield* Effect.callback<{ status: number; body: string }, AgentFailure>((resume) => {
      const req = https.request({
        host: cluster.host,
        port: Number(cluster.port),
        path: `/api/v1/nodes/${encodeURIComponent(nodeName)}`,
        method: "GET",
        ca,
        headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
        timeout: 10_000
      }, (res) => {
        let body = ""
        res.setEncoding("utf8").on("data", (d: string) => (body += d)).on("end", () => resume(Effect.succeed({ status: res.statusCode ?? 0, body })))
      })
      req.on("timeout", () => req.destroy(new Error("no answer within 10 s")))
      req.on("error", (e) => resume(Effect.fail(failure(`cannot reach the Kubernetes API at ${where}: ${e.message}`))))
      req.end()
      return Effect.sync(() => req.destroy())
    })
    if (answer.status === 401 || answer.status === 403) {
      return yield* failure(`the Kubernetes API refused to show node ${nodeName} (${answer.status}): give the agent's service account "get" on nodes`)
    }
    if (answer.status !== 200) return yield* failure(`GET ${where} answered ${answer.status}: ${answer.body.slice(0, 200)}`)
    const node = yield* Effect.try({ try: () => JSON.parse(answer.body) as unknown, catch: () => failure(`GET ${where} did not answer JSON`) }).pipe(
      Effect.flatMap((json) => Schema.decodeUnknownEffect(NodeObject)(json).pipe(Effect.mapError(() => failure(`GET ${where}: not a Node object`))))
    )
    const cidrs = node.spec?.podCIDRs ?? (node.spec?.podCIDR === undefined ? [] : [node.spec.podCIDR])
    if (cidrs.length === 0) return yield* failure(`node ${nodeName} has no spec.podCIDRs yet: is the controller manager allocating node CIDRs?`)
    return cidrs
  })

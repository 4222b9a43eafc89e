import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as https from "node:https"
import type { AddressInfo } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { podCidrSource } from "../src/agent.ts"
import type { AgentConfig } from "../src/config.ts"
import { inClusterFromEnv } from "../src/kubernetes.ts"

/**
 * The pod CIDRs from a Node object through the in-cluster API: a local HTTPS server with its own
 * CA stands for the API server, a temp dir for the service account (token and ca.crt).
 */

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-k8s-"))
const sa = path.join(dir, "serviceaccount")
let server: https.Server
let port = 0
const nodes: Record<string, unknown> = {
  n1: { kind: "Node", metadata: { name: "n1" }, spec: { podCIDR: "10.244.1.0/24", podCIDRs: ["10.244.1.0/24", "fd00:244:1::/64"] } },
  old: { kind: "Node", metadata: { name: "old" }, spec: { podCIDR: "10.244.7.0/24" } },
  fresh: { kind: "Node", metadata: { name: "fresh" }, spec: {} }
}

beforeAll(async () => {
  fs.mkdirSync(sa)
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=kubernetes",
    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", path.join(dir, "key.pem"), "-out", path.join(sa, "ca.crt")
  ], { stdio: "ignore" })
  fs.writeFileSync(path.join(sa, "token"), "good-token\n")
  server = https.createServer({ key: fs.readFileSync(path.join(dir, "key.pem")), cert: fs.readFileSync(path.join(sa, "ca.crt")) }, (req, res) => {
    if (req.headers.authorization !== "Bearer good-token") return res.writeHead(401).end("Unauthorized")
    const name = /^\/api\/v1\/nodes\/([^/]+)$/.exec(req.url ?? "")?.[1]
    const node = name === undefined ? undefined : nodes[name]
    if (node === undefined) return res.writeHead(404).end(JSON.stringify({ kind: "Status", code: 404 }))
    res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify(node))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  port = (server.address() as AddressInfo).port
})

afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve))
  fs.rmSync(dir, { recursive: true, force: true })
})

const env = () => ({ KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: String(port), CONTAINERSCALE_SERVICE_ACCOUNT_DIR: sa })
const cidrsOf = (node: string, e: Record<string, string> = env()) =>
  Effect.runPromise(Effect.result(podCidrSource({ podCidrs: undefined, kubernetesNode: node } as AgentConfig, e)!))

describe("pod CIDRs from Kubernetes", () => {
  it("reads spec.podCIDRs, or spec.podCIDR on older clusters", async () => {
    const n1 = await cidrsOf("n1")
    assert.deepStrictEqual(n1._tag === "Success" ? n1.success : n1, ["10.244.1.0/24", "fd00:244:1::/64"])
    const old = await cidrsOf("old")
    assert.deepStrictEqual(old._tag === "Success" ? old.success : old, ["10.244.7.0/24"])
  })

  it("says what to fix: no CIDR allocated yet, a refused token, not in a cluster", async () => {
    const fresh = await cidrsOf("fresh")
    assert.include(fresh._tag === "Failure" ? fresh.failure.message : "", "no spec.podCIDRs yet")
    fs.writeFileSync(path.join(sa, "token"), "stale-token\n")
    const refused = await cidrsOf("n1")
    fs.writeFileSync(path.join(sa, "token"), "good-token\n")
    assert.include(refused._tag === "Failure" ? refused.failure.message : "", `"get" on nodes`)
    assert.notInclude(JSON.stringify(refused), "stale-token")
    const outside = await cidrsOf("n1", {})
    assert.include(outside._tag === "Failure" ? outside.failure.message : "", "KUBERNETES_SERVICE_HOST")
    assert.isUndefined(inClusterFromEnv({}))
  })
})

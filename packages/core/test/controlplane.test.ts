import { startTestnet, type Testnet } from "@containerscale/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Redacted } from "effect"
import * as fs from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { inspect } from "node:util"
import { ControlPlane, type HeadscaleClient, makeHeadscale } from "../src/controlplane/Headscale.ts"
import { ControlPlaneCode, type ControlPlaneError } from "../src/controlplane/errors.ts"

/** The Headscale client against the testnet stand-in in both API generations, and against fakes for failures. */

const failure = <A>(effect: Effect.Effect<A, ControlPlaneError>) =>
  Effect.flatMap(Effect.exit(effect), (exit) => {
    if (Exit.isSuccess(exit)) return Effect.die(new Error(`expected a failure, got ${JSON.stringify(exit.value)}`))
    const error = exit.cause.reasons.find((r) => r._tag === "Fail")
    if (error === undefined || error._tag !== "Fail") return Effect.die(new Error(`expected a typed failure: ${exit.cause}`))
    return Effect.succeed(error.error)
  })

/** Every way an error can be shown must leave the secret out. */
const assertNoSecret = (error: unknown, ...secrets: Array<string>) => {
  const shown = [String(error), inspect(error, { depth: 5 }), JSON.stringify(error), (error as Error).message ?? "", (error as { details?: string }).details ?? ""]
  for (const secret of secrets) for (const text of shown) assert.notInclude(text, secret)
}

const withTestnet = (headscaleVersion: "0.29" | "0.25") =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-controlplane-"))
      return { dir, testnet: await startTestnet({ stateDir: dir, headscaleVersion }) }
    }),
    ({ dir, testnet }) =>
      Effect.promise(async () => {
        await testnet.close()
        fs.rmSync(dir, { recursive: true, force: true })
      })
  ).pipe(Effect.map(({ testnet }) => testnet))

const clientOf = (testnet: Testnet, timeout: string = "5 seconds") =>
  makeHeadscale({ url: testnet.apiUrl, apiKey: Redacted.make(testnet.apiKey), timeout })

/** The stand-in daemon's `/ts/*` calls on the control socket. */
const control = (testnet: Testnet, call: "register" | "update", body: unknown) =>
  Effect.promise(
    () =>
      new Promise<{ status: number; body: any }>((resolve, reject) => {
        const request = http.request({ socketPath: testnet.controlSocket, method: "POST", path: `/ts/${call}`, agent: false }, (response) => {
          const chunks: Array<Buffer> = []
          response.on("data", (chunk: Buffer) => chunks.push(chunk))
          response.on("end", () => resolve({ status: response.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString("utf8")) }))
        })
        request.on("error", reject)
        request.end(JSON.stringify(body))
      })
  )

let keys = 0
const register = (testnet: Testnet, hostname: string, advertiseRoutes: Array<string> = [], authKey?: string) =>
  Effect.gen(function*() {
    const nodeKey = `nodekey:${(++keys).toString(16).padStart(8, "0")}${"cd".repeat(28)}`
    const key = authKey ?? (yield* Effect.promise(() => testnet.createAuthKey()))
    const answer = yield* control(testnet, "register", { nodeKey, authKey: key, hostname, advertiseRoutes })
    assert.strictEqual(answer.status, 200, JSON.stringify(answer.body))
    return { nodeKey, id: String(answer.body.node.id) }
  })

const advertise = (testnet: Testnet, nodeKey: string, advertiseRoutes: Array<string>) =>
  Effect.flatMap(control(testnet, "update", { nodeKey, advertiseRoutes }), (answer) => Effect.sync(() => assert.strictEqual(answer.status, 200)))

const approvedOn = (testnet: Testnet, id: string) => testnet.nodes().find((n) => String(n.id) === id)!.approvedRoutes

/** A raw API call, to set up state the client should then respect. */
const raw = (testnet: Testnet, method: string, urlPath: string, body?: unknown) =>
  Effect.promise(async () => {
    const response = await fetch(`${testnet.apiUrl}${urlPath}`, {
      method,
      headers: { authorization: `Bearer ${testnet.apiKey}` },
      ...(body === undefined ? {} : { body: JSON.stringify(body) })
    })
    return { status: response.status, body: await response.json() as any }
  })

/** Approves a prefix the way an admin would have before, outside the client. */
const approveOutside = (testnet: Testnet, id: string, prefix: string) =>
  Effect.gen(function*() {
    if (testnet.headscaleVersion === "0.29") {
      const current = approvedOn(testnet, id)
      const answer = yield* raw(testnet, "POST", `/api/v1/node/${id}/approve_routes`, { routes: [...current, prefix] })
      assert.strictEqual(answer.status, 200)
    } else {
      const { body } = yield* raw(testnet, "GET", `/api/v1/node/${id}/routes`)
      const row = body.routes.find((r: { prefix: string }) => r.prefix === prefix)
      assert.strictEqual((yield* raw(testnet, "POST", `/api/v1/routes/${row.id}/enable`)).status, 200)
    }
  })

for (const headscaleVersion of ["0.29", "0.25"] as const) {
  const generation = headscaleVersion === "0.29" ? "0.26+" : "legacy"

  describe(`Headscale client against the stand-in (${headscaleVersion})`, () => {
    it.live("detects the generation once per client", () =>
      Effect.gen(function*() {
        const testnet = yield* withTestnet(headscaleVersion)
        const client = clientOf(testnet)
        const found = yield* client.version()
        assert.deepStrictEqual(found, { version: headscaleVersion === "0.29" ? "v0.29.2" : undefined, generation })
        yield* Effect.promise(() => testnet.close())
        // cached: no request now that the server is gone
        assert.deepStrictEqual(yield* client.version(), found)
        // a new client must ask, and cannot
        const error = yield* failure(clientOf(testnet).version())
        assert.strictEqual(error._tag, "ControlPlaneUnreachable")
      }))

    it.live("nodes and node: ids as strings, tags in either generation's fields, route fields only from 0.26", () =>
      Effect.gen(function*() {
        const testnet = yield* withTestnet(headscaleVersion)
        const client = clientOf(testnet)
        const a = yield* register(testnet, "alpha", ["10.1.0.0/24"], yield* Effect.promise(() => testnet.createAuthKey({ tags: ["tag:pod"] })))
        const b = yield* register(testnet, "Beta Host")
        const nodes = yield* client.nodes()
        assert.deepStrictEqual(nodes.map((n) => [n.id, n.name, n.givenName]), [[a.id, "alpha", "alpha"], [b.id, "Beta Host", "beta-host"]])
        const alpha = yield* client.node(a.id)
        assert.strictEqual(alpha.nodeKey, a.nodeKey)
        assert.deepStrictEqual(alpha.tags, ["tag:pod"])
        assert.deepStrictEqual(alpha.ipAddresses, ["100.64.0.1", "fd7a:115c:a1e0::1"])
        // 0.28+ shows a tagged node with no user except in the list (tagged-devices)
        assert.strictEqual(alpha.user?.name, generation === "0.26+" ? undefined : "containerscale")
        assert.isFalse(alpha.online)
        if (generation === "0.26+") {
          assert.deepStrictEqual(alpha.advertisedRoutes, ["10.1.0.0/24"])
          assert.deepStrictEqual(alpha.approvedRoutes, [])
        } else {
          assert.isUndefined(alpha.advertisedRoutes)
          assert.isUndefined(alpha.approvedRoutes)
        }
        assert.deepStrictEqual((yield* client.nodes({ user: "nobody" })).map((n) => n.id), [])
        const missing = yield* failure(client.node("99"))
        assert.strictEqual(missing._tag, "ControlPlaneNotFound")
        assert.strictEqual(missing.cniCode, ControlPlaneCode.NotFound)
        const bad = yield* failure(client.node("1/../2"))
        assert.strictEqual(bad._tag, "ControlPlaneRejected")
        assert.match(bad.message, /give the decimal id/)
      }))

    it.live("approveRoutes adds to the node's approved set, keeps what was there, and leaves other nodes alone", () =>
      Effect.gen(function*() {
        const testnet = yield* withTestnet(headscaleVersion)
        const client = clientOf(testnet)
        const a = yield* register(testnet, "router-a", ["10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24"])
        const b = yield* register(testnet, "router-b", ["10.1.0.0/24"])
        yield* approveOutside(testnet, a.id, "10.3.0.0/24")

        const first = yield* client.approveRoutes(a.id, ["10.1.0.0/24"])
        assert.deepStrictEqual(first, { generation, nodeId: a.id, approved: ["10.1.0.0/24"], alreadyApproved: [] })
        assert.deepStrictEqual(approvedOn(testnet, a.id), ["10.1.0.0/24", "10.3.0.0/24"])

        const second = yield* client.approveRoutes(a.id, ["10.2.0.0/24", "10.1.0.0/24", "10.2.0.0/24"])
        assert.deepStrictEqual(second, { generation, nodeId: a.id, approved: ["10.2.0.0/24"], alreadyApproved: ["10.1.0.0/24"] })
        assert.deepStrictEqual(approvedOn(testnet, a.id), ["10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24"])

        const again = yield* client.approveRoutes(a.id, ["10.3.0.0/24"])
        assert.deepStrictEqual(again.approved, [])
        assert.deepStrictEqual(again.alreadyApproved, ["10.3.0.0/24"])

        // the other router of 10.1.0.0/24 is untouched
        assert.deepStrictEqual(approvedOn(testnet, b.id), [])
        assert.deepStrictEqual(yield* client.routesOf(b.id), { advertised: ["10.1.0.0/24"], approved: [], serving: [] })
        const routes = yield* client.routesOf(a.id)
        assert.deepStrictEqual(routes, {
          advertised: ["10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24"],
          approved: ["10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24"],
          serving: ["10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24"]
        })

        const empty = yield* client.approveRoutes(a.id, [])
        assert.deepStrictEqual(empty, { generation, nodeId: a.id, approved: [], alreadyApproved: [] })
        const bad = yield* failure(client.approveRoutes(a.id, ["10.0.0.0/99", "pods"]))
        assert.strictEqual(bad._tag, "ControlPlaneRejected")
        assert.match(bad.message, /not CIDR prefixes: "10\.0\.0\.0\/99", "pods"/)
        const missing = yield* failure(client.approveRoutes("77", ["10.1.0.0/24"]))
        assert.strictEqual(missing._tag, "ControlPlaneNotFound")
        assert.deepStrictEqual(approvedOn(testnet, a.id), ["10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24"])
      }))

    it.live(
      headscaleVersion === "0.29"
        ? "a prefix not advertised yet is approved ahead, and served once the node announces it"
        : "a prefix not advertised yet fails with RouteNotAdvertised, enabling nothing, and succeeds once announced",
      () =>
        Effect.gen(function*() {
          const testnet = yield* withTestnet(headscaleVersion)
          const client = clientOf(testnet)
          const node = yield* register(testnet, "pod-router", ["10.4.0.0/24"])
          if (generation === "0.26+") {
            const ahead = yield* client.approveRoutes(node.id, ["10.5.0.0/24"])
            assert.deepStrictEqual(ahead.approved, ["10.5.0.0/24"])
            assert.deepStrictEqual(yield* client.routesOf(node.id), { advertised: ["10.4.0.0/24"], approved: ["10.5.0.0/24"], serving: [] })
          } else {
            const error = yield* failure(client.approveRoutes(node.id, ["10.4.0.0/24", "10.5.0.0/24"]))
            assert.strictEqual(error._tag, "RouteNotAdvertised")
            if (error._tag !== "RouteNotAdvertised") return
            assert.deepStrictEqual(error.routes, ["10.5.0.0/24"])
            assert.strictEqual(error.nodeId, node.id)
            assert.match(error.message, /has not advertised 10\.5\.0\.0\/24 yet.*nothing was enabled\. Retry/)
            assert.strictEqual(error.cniCode, ControlPlaneCode.NotFound)
            assert.deepStrictEqual(approvedOn(testnet, node.id), [])
          }
          yield* advertise(testnet, node.nodeKey, ["10.4.0.0/24", "10.5.0.0/24"])
          const after = yield* client.approveRoutes(node.id, ["10.4.0.0/24", "10.5.0.0/24"])
          assert.deepStrictEqual(after.approved, generation === "0.26+" ? ["10.4.0.0/24"] : ["10.4.0.0/24", "10.5.0.0/24"])
          assert.deepStrictEqual(yield* client.routesOf(node.id), {
            advertised: ["10.4.0.0/24", "10.5.0.0/24"],
            approved: ["10.4.0.0/24", "10.5.0.0/24"],
            serving: ["10.4.0.0/24", "10.5.0.0/24"]
          })
        })
    )

    it.live("concurrent approvals of one node through one client both stick", () =>
      Effect.gen(function*() {
        const testnet = yield* withTestnet(headscaleVersion)
        const client = clientOf(testnet)
        const node = yield* register(testnet, "busy", ["10.6.1.0/24", "10.6.2.0/24", "10.6.3.0/24"])
        yield* Effect.all([
          client.approveRoutes(node.id, ["10.6.1.0/24"]),
          client.approveRoutes(node.id, ["10.6.2.0/24"]),
          client.approveRoutes(node.id, ["10.6.3.0/24"])
        ], { concurrency: "unbounded" })
        assert.deepStrictEqual(approvedOn(testnet, node.id), ["10.6.1.0/24", "10.6.2.0/24", "10.6.3.0/24"])
      }))

    it.live("deleteNode is idempotent: true, then false once gone", () =>
      Effect.gen(function*() {
        const testnet = yield* withTestnet(headscaleVersion)
        const client = clientOf(testnet)
        const node = yield* register(testnet, "doomed")
        const keep = yield* register(testnet, "kept")
        assert.isTrue(yield* client.deleteNode(node.id))
        assert.isFalse(yield* client.deleteNode(node.id))
        assert.isFalse(yield* client.deleteNode("12345"))
        assert.deepStrictEqual(testnet.nodes().map((n) => String(n.id)), [keep.id])
        assert.strictEqual((yield* failure(client.routesOf(node.id)))._tag, "ControlPlaneNotFound")
      }))

    it.live("createPreAuthKey: a Redacted key that registers a node with the key's properties", () =>
      Effect.gen(function*() {
        const testnet = yield* withTestnet(headscaleVersion)
        const client = clientOf(testnet)
        const key = yield* client.createPreAuthKey({ user: "containerscale", reusable: false, ephemeral: true, tags: ["tag:pod"], expiresIn: "10 minutes" })
        assert.strictEqual(key.id, "1")
        assert.deepStrictEqual([key.user, key.reusable, key.ephemeral, key.aclTags], ["containerscale", false, true, ["tag:pod"]])
        const expires = Date.parse(key.expiration!)
        assert.isTrue(expires > Date.now() + 9 * 60_000 && expires <= Date.now() + 10 * 60_000)
        const plain = Redacted.value(key.key)
        assert.match(plain, /^hskey-auth-/)
        assertNoSecret(key, plain)
        const node = yield* register(testnet, "pod", [], plain)
        const stored = testnet.nodes().find((n) => String(n.id) === node.id)!
        assert.deepStrictEqual([stored.ephemeral, stored.tags], [true, ["tag:pod"]])

        const byId = yield* client.createPreAuthKey({ user: { id: "1" }, reusable: true, ephemeral: false, expiresIn: "1 hour" })
        assert.strictEqual(byId.user, "containerscale")
        const unknown = yield* failure(client.createPreAuthKey({ user: "nobody", reusable: true, ephemeral: false, expiresIn: "1 hour" }))
        assert.include(["ControlPlaneNotFound"], unknown._tag)
        const expired = yield* failure(client.createPreAuthKey({ user: "containerscale", reusable: true, ephemeral: false, expiresIn: 0 }))
        assert.strictEqual(expired._tag, "ControlPlaneRejected")
        const badTag = yield* failure(client.createPreAuthKey({ user: "containerscale", reusable: true, ephemeral: false, tags: ["Pod"], expiresIn: "1 hour" }))
        assert.strictEqual(badTag._tag, "ControlPlaneRejected")
        assert.match(badTag.message, /tag must start with the string 'tag:'/)

        const tagOnly = client.createPreAuthKey({ reusable: true, ephemeral: true, tags: ["tag:pod"], expiresIn: "1 hour" })
        if (generation === "0.26+") {
          const tagged = yield* tagOnly
          assert.isUndefined(tagged.user)
        } else {
          const error = yield* failure(tagOnly)
          assert.strictEqual(error._tag, "ControlPlaneRejected")
          assert.match(error.message, /≤0\.25 needs a user/)
        }
      }))
  })
}

describe("Headscale client failures", () => {
  it.live("a wrong API key is ControlPlaneUnauthorized, and the key shows nowhere", () =>
    Effect.gen(function*() {
      const testnet = yield* withTestnet("0.29")
      const wrong = `${testnet.apiKey.slice(0, -4)}XXXX`
      const client = makeHeadscale({ url: testnet.apiUrl, apiKey: Redacted.make(wrong) })
      // /version needs no key
      assert.strictEqual((yield* client.version()).generation, "0.26+")
      for (const call of [client.nodes(), client.node("1"), client.approveRoutes("1", ["10.1.0.0/24"]), client.deleteNode("1")]) {
        const error = yield* failure(call)
        assert.strictEqual(error._tag, "ControlPlaneUnauthorized")
        assert.strictEqual(error.cniCode, ControlPlaneCode.Unauthorized)
        assert.strictEqual(error.status, 401)
        assert.match(error.message, /the API key is wrong, expired or revoked/)
        assertNoSecret(error, wrong, testnet.apiKey)
      }
      const legacy = yield* withTestnet("0.25")
      const legacyError = yield* failure(makeHeadscale({ url: legacy.apiUrl, apiKey: Redacted.make("nope.nope") }).version())
      assert.strictEqual(legacyError._tag, "ControlPlaneUnauthorized")
    }))

  it.live("an unreachable URL is ControlPlaneUnreachable; a URL that is not http(s) is rejected", () =>
    Effect.gen(function*() {
      const port = yield* Effect.promise(
        () =>
          new Promise<number>((resolve) => {
            const server = http.createServer()
            server.listen(0, "127.0.0.1", () => {
              const { port } = server.address() as AddressInfo
              server.close(() => resolve(port))
            })
          })
      )
      const secret = "hskey-api-unreachable0-SECRET"
      const client = makeHeadscale({ url: `http://user:pw@127.0.0.1:${port}/`, apiKey: Redacted.make(secret) })
      assert.strictEqual(client.url, `http://127.0.0.1:${port}`)
      const error = yield* failure(client.nodes())
      assert.strictEqual(error._tag, "ControlPlaneUnreachable")
      assert.strictEqual(error.cniCode, ControlPlaneCode.Unreachable)
      assert.match(error.message, new RegExp(`cannot reach Headscale at http://127\\.0\\.0\\.1:${port} \\(GET /api/v1/node\\).*ECONNREFUSED`))
      assertNoSecret(error, secret, "pw")
      const invalid = yield* failure(makeHeadscale({ url: "ftp://x", apiKey: Redacted.make(secret) }).nodes())
      assert.strictEqual(invalid._tag, "ControlPlaneRejected")
    }))

  it.live("a server that does not answer is ControlPlaneTimeout, within the client's timeout", () =>
    Effect.gen(function*() {
      const fake = yield* fakeServer(() => {})
      const started = Date.now()
      const error = yield* failure(makeHeadscale({ url: fake.url, apiKey: Redacted.make("k"), timeout: "200 millis" }).nodes())
      assert.strictEqual(error._tag, "ControlPlaneTimeout")
      assert.strictEqual(error.cniCode, ControlPlaneCode.Unreachable)
      if (error._tag === "ControlPlaneTimeout") assert.strictEqual(error.timeoutMillis, 200)
      assert.match(error.message, /did not answer GET \/api\/v1\/node within 200 ?m/)
      assert.isBelow(Date.now() - started, 2000)
    }))

  it.live("the API key and created keys are scrubbed from whatever the server echoes", () =>
    Effect.gen(function*() {
      const secret = "hskey-api-ECHOECHOECHO-0123456789secret"
      const fake = yield* fakeServer((request, response) => {
        const auth = request.headers.authorization ?? ""
        const status = request.url!.startsWith("/api/v1/node/1") ? 500 : request.url!.startsWith("/api/v1/node/2") ? 400 : 200
        if (request.url === "/version") return reply(response, 200, { version: "0.28.0" })
        if (request.url === "/api/v1/user?name=u") return reply(response, 200, { users: [{ id: "1", name: "u" }] })
        if (request.url === "/api/v1/preauthkey") {
          // a key the client cannot decode (ids must be strings): the answer carries the key
          return reply(response, 200, { preAuthKey: { id: 5, key: "hskey-auth-LEAKLEAKLEAK-topsecret", reusable: true, ephemeral: false } })
        }
        reply(response, status, { code: 2, message: `bad token ${auth}`, details: [] })
      })
      const client = makeHeadscale({ url: fake.url, apiKey: Redacted.make(secret) })
      for (const call of [client.node("1"), client.node("2"), client.nodes()]) {
        const error = yield* failure(call)
        assert.match(error.message, /bad token Bearer <redacted>|unexpected answer/)
        assertNoSecret(error, secret)
      }
      const keyError = yield* failure(client.createPreAuthKey({ user: "u", reusable: true, ephemeral: false, expiresIn: "1 hour" }))
      assert.strictEqual(keyError._tag, "ControlPlaneUnexpectedAnswer")
      assert.strictEqual(keyError.cniCode, ControlPlaneCode.UnexpectedAnswer)
      assertNoSecret(keyError, secret, "LEAKLEAKLEAK-topsecret")
    }))

  it.live("detection: 0.26 has neither /version nor the routes API; a server with no Headscale API is unexpected", () =>
    Effect.gen(function*() {
      const v026 = yield* fakeServer((request, response) => {
        if (request.url === "/api/v1/apikey") return reply(response, 200, { apiKeys: [] })
        reply(response, 404, { code: 5, message: "Not Found", details: [] })
      })
      assert.deepStrictEqual(yield* makeHeadscale({ url: v026.url, apiKey: Redacted.make("k") }).version(), { version: undefined, generation: "0.26+" })
      const legacyVersion = yield* fakeServer((_, response) => reply(response, 200, { version: "v0.25.1" }))
      assert.strictEqual((yield* makeHeadscale({ url: legacyVersion.url, apiKey: Redacted.make("k") }).version()).generation, "legacy")
      const nothing = yield* fakeServer((_, response) => {
        response.writeHead(404, { "content-type": "text/plain" })
        response.end("404 page not found\n")
      })
      const error = yield* failure(makeHeadscale({ url: nothing.url, apiKey: Redacted.make("k") }).version())
      assert.strictEqual(error._tag, "ControlPlaneUnexpectedAnswer")
      assert.match(error.message, /not a Headscale server/)
      const garbage = yield* fakeServer((_, response) => reply(response, 200, { hello: "world" }))
      const undecodable = yield* failure(makeHeadscale({ url: garbage.url, apiKey: Redacted.make("k") }).version())
      assert.strictEqual(undecodable._tag, "ControlPlaneUnexpectedAnswer")
    }))

  it.live("0.30's problem JSON, a proxy's 502 and a redirect map to their errors", () =>
    Effect.gen(function*() {
      const fake = yield* fakeServer((request, response) => {
        if (request.url === "/api/v1/node/3") {
          response.writeHead(404, { "content-type": "application/problem+json" })
          return response.end(JSON.stringify({ type: "about:blank", title: "Not Found", status: 404, detail: "node 3 not found" }))
        }
        if (request.url === "/api/v1/node/4") return reply(response, 502, {})
        response.writeHead(301, { location: "https://elsewhere.example/api/v1/node" })
        response.end()
      })
      const client = makeHeadscale({ url: fake.url, apiKey: Redacted.make("k") })
      const notFound = yield* failure(client.node("3"))
      assert.strictEqual(notFound._tag, "ControlPlaneNotFound")
      assert.match(notFound.message, /node 3 not found/)
      assert.strictEqual((yield* failure(client.node("4")))._tag, "ControlPlaneUnreachable")
      const redirect = yield* failure(client.nodes())
      assert.strictEqual(redirect._tag, "ControlPlaneUnexpectedAnswer")
      assert.match(redirect.message, /redirect to https:\/\/elsewhere\.example/)
    }))

  it.live("ControlPlane.layer provides the client", () =>
    Effect.gen(function*() {
      const testnet = yield* withTestnet("0.25")
      const version = yield* Effect.gen(function*() {
        const plane: HeadscaleClient = yield* ControlPlane
        return yield* plane.version()
      }).pipe(Effect.provide(ControlPlane.layer({ url: testnet.apiUrl, apiKey: Redacted.make(testnet.apiKey) })))
      assert.strictEqual(version.generation, "legacy")
    }))
})

const reply = (response: http.ServerResponse, status: number, body: unknown) => {
  response.writeHead(status, { "content-type": "application/json" })
  response.end(JSON.stringify(body))
}

/** An HTTP server on 127.0.0.1 with the given handler, closed (connections too) with the scope. */
const fakeServer = (handler: (request: http.IncomingMessage, response: http.ServerResponse) => void) =>
  Effect.acquireRelease(
    Effect.promise(
      () =>
        new Promise<{ server: http.Server; url: string }>((resolve) => {
          const server = http.createServer(handler)
          server.listen(0, "127.0.0.1", () => resolve({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }))
        })
    ),
    ({ server }) =>
      Effect.promise(() => {
        server.closeAllConnections()
        return new Promise<void>((resolve) => server.close(() => resolve()))
      })
  )

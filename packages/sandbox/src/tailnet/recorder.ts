import * as fs from "node:fs"
import * as path from "node:path"
import { localApi, type LocalApiRequest, waitUntil, watchIpnBus } from "@containerscale/testing"
import { type BareTailscaled, startBareTailscaled } from "./bare-daemon.ts"
import { type RealTailnet, startRealTailnet } from "./fixture.ts"

/**
 * Records what the real daemons answer, for the core clients' recorded-response tests: the
 * LocalAPI of tailscaled (status before login and Running with peers, prefs, whois, the IPN bus of
 * a bring-up and of a refused login, error answers) and the Headscale API of the current Headscale
 * and of 0.25 (users, pre-auth keys, nodes with and without routes, route approval, API keys,
 * errors, version and health). Every pre-auth key and API key is replaced by `X`s before anything
 * is written, and the files are checked for them afterwards.
 *
 * The scenario is fixed, so ids are too: on the current Headscale the nodes are router (1, user
 * `containers`, serves 192.168.50.0/24), laptop (2, user `alice`, offline when recorded) and
 * ctr-web-1 (3, tagged `tag:container` by its key, serves 10.88.0.0/24).
 */

export interface RecordedAnswer {
  readonly request: { readonly method: string; readonly path: string; readonly headers?: Record<string, string>; readonly body?: unknown }
  readonly status: number
  readonly contentType: string | null
  /** parsed when it is JSON, else the text */
  readonly body: unknown
}

export interface RecordOptions {
  /** where the LocalAPI files go (packages/core/test/fixtures/localapi) */
  readonly localApiDir: string
  /** where answers-0.29.json and answers-0.25.json go (packages/core/test/fixtures/headscale) */
  readonly headscaleDir: string
  readonly progress?: (line: string) => void
}

const EXPIRES_IN_MS = 3600_000

/** Replaces every secret, and the forms of keys Headscale shows, with `X`s of the same length. */
class Scrubber {
  private readonly secrets = new Set<string>()

  add(secret: string): void {
    if (secret.length < 8) throw new Error("refusing to record with a secret shorter than 8 characters")
    this.secrets.add(secret)
    const legacyPrefix = /^([A-Za-z0-9_-]{5,})\./.exec(secret)?.[1]
    if (legacyPrefix !== undefined) this.secrets.add(legacyPrefix)
  }

  text(text: string): string {
    let out = text.replace(/hskey-(auth|api)-([A-Za-z0-9_-]{12})-([A-Za-z0-9_-]+|\*\*\*)/g, (_, kind: string, prefix: string, rest: string) =>
      `hskey-${kind}-${"X".repeat(prefix.length)}-${rest === "***" ? "***" : "X".repeat(rest.length)}`)
    for (const secret of this.secrets) out = out.split(secret).join("X".repeat(secret.length))
    return out
  }

  check(file: string): void {
    const text = fs.readFileSync(file, "utf8")
    for (const secret of this.secrets) {
      if (text.includes(secret)) throw new Error(`${file} still holds a key; nothing recorded may keep one`)
    }
  }
}

const parseBody = (text: string, contentType: string | null): unknown => {
  if (contentType?.includes("json") === true && text.trim() !== "") {
    try {
      return JSON.parse(text)
    } catch {
      return text
    }
  }
  return text
}

const until = (what: string, check: () => Promise<boolean>) => waitUntil(what, async () => (await check()) || undefined, 60_000)

const inAnHour = () => new Date(Date.now() + EXPIRES_IN_MS).toISOString()

/** The Headscale API with a recorder: `call` returns the parsed body, `record` also keeps the answer under a name. */
const headscaleRecorder = (tailnet: RealTailnet, apiKey: string, scrub: Scrubber) => {
  const answers: Record<string, RecordedAnswer> = {}
  const call = async (method: string, urlPath: string, body?: unknown, key: string | null = apiKey) => {
    const response = await fetch(`${tailnet.apiUrl}${urlPath}`, {
      method,
      headers: key === null ? {} : { authorization: `Bearer ${key}` },
      ...(body === undefined ? {} : { body: JSON.stringify(body) })
    })
    const text = await response.text()
    const contentType = response.headers.get("content-type")
    return { status: response.status, contentType, text, body: parseBody(text, contentType) as any }
  }
  const record = async (name: string, method: string, urlPath: string, body?: unknown, key: string | null = apiKey) => {
    const answer = await call(method, urlPath, body, key)
    answers[name] = JSON.parse(scrub.text(JSON.stringify({
      request: { method, path: urlPath, ...(body === undefined ? {} : { body }) },
      status: answer.status,
      contentType: answer.contentType,
      body: answer.body
    })))
    return answer
  }
  return { answers, call, record }
}

const writeJson = (file: string, value: unknown, scrub: Scrubber) => {
  fs.writeFileSync(file, `${scrub.text(JSON.stringify(value, null, "\t"))}\n`)
  scrub.check(file)
}

const writeText = (file: string, text: string, scrub: Scrubber) => {
  fs.writeFileSync(file, scrub.text(text))
  scrub.check(file)
}

const recordCurrent = async (options: RecordOptions, scrub: Scrubber, progress: (line: string) => void) => {
  const tailnet = await startRealTailnet()
  const daemons: Array<BareTailscaled> = []
  try {
    const apiKey = await tailnet.createApiKey()
    scrub.add(apiKey)
    const { answers, call, record } = headscaleRecorder(tailnet, apiKey, scrub)
    progress("recorder: Headscale users, keys and errors")
    await record("version", "GET", "/version", undefined, null)
    await record("health", "GET", "/health", undefined, null)
    await record("api-health", "GET", "/api/v1/health")
    await record("unauthorized", "GET", "/api/v1/node", undefined, null)
    await record("unauthorized-wrong-key", "GET", "/api/v1/node", undefined, `hskey-api-${"A".repeat(12)}-${"B".repeat(64)}`)
    await record("unknown-path", "GET", "/api/v1/nope")
    await record("user-create", "POST", "/api/v1/user", { name: "containers" })
    await record("user-create-alice", "POST", "/api/v1/user", { name: "alice", displayName: "Alice", email: "alice@example.com" })
    await record("user-duplicate", "POST", "/api/v1/user", { name: "containers" })
    await record("users", "GET", "/api/v1/user")
    await record("users-by-name", "GET", "/api/v1/user?name=containers")
    await record("users-by-unknown-name", "GET", "/api/v1/user?name=nobody")
    const createKey = async (name: string, body: Record<string, unknown>) => {
      const answer = await record(name, "POST", "/api/v1/preauthkey", { ...body, expiration: inAnHour() })
      if (answer.status !== 200) throw new Error(`${name}: ${answer.status} ${answer.text}`)
      scrub.add(answer.body.preAuthKey.key)
      return answer.body.preAuthKey.key as string
    }
    const taggedKey = await createKey("preauthkey-create", { user: "1", reusable: true, ephemeral: true, aclTags: ["tag:container"] })
    const routerKey = await createKey("preauthkey-create-untagged", { user: "1", reusable: true, ephemeral: true })
    const aliceKey = await createKey("preauthkey-create-alice", { user: "2", reusable: true, ephemeral: false })
    await createKey("preauthkey-create-tag-only", { reusable: false, ephemeral: true, aclTags: ["tag:pod"] })
    await record("preauthkey-bad-tag", "POST", "/api/v1/preauthkey", { user: "1", reusable: true, expiration: inAnHour(), aclTags: ["Container"] })
    await record("preauthkey-unknown-user", "POST", "/api/v1/preauthkey", { user: "42", reusable: true, expiration: inAnHour() })
    await record("preauthkeys", "GET", "/api/v1/preauthkey")

    progress("recorder: a fresh tailscaled")
    const ctr = await startBareTailscaled(tailnet, "ctr-web-1")
    daemons.push(ctr)
    const errors: Record<string, RecordedAnswer> = {}
    const localAnswer = async (socket: string, route: string, request: LocalApiRequest = {}) => {
      const answer = await localApi(socket, route, request)
      return { ...answer, contentType: answer.headers["content-type"] ?? null }
    }
    const recordError = async (name: string, route: string, request: LocalApiRequest = {}) => {
      const answer = await localAnswer(ctr.socket, route, request)
      errors[name] = {
        request: {
          method: request.method ?? "GET",
          path: route.startsWith("/") ? route : `/localapi/v0/${route}`,
          ...(request.headers === undefined ? {} : { headers: request.headers }),
          ...(request.body === undefined ? {} : { body: request.body })
        },
        status: answer.status,
        contentType: answer.contentType,
        body: answer.body
      }
    }
    writeText(path.join(options.localApiDir, "status-needslogin.json"), (await localApi(ctr.socket, "status")).body, scrub)
    await recordError("bad-host", "status", { headers: { host: "localhost" } })
    await recordError("origin", "status", { headers: { origin: "http://evil.example" } })
    await recordError("referer", "status", { headers: { referer: "http://evil.example/" } })
    await recordError("unknown-endpoint", "no-such-endpoint")
    await recordError("prefs-wrong-method", "prefs", { method: "POST" })
    await recordError("start-not-post", "start")
    await recordError("set-dns-no-nodekey", "set-dns?name=x&value=y", { method: "POST" })
    await recordError("prefs-route-host-bits", "prefs", { method: "PATCH", body: { AdvertiseRoutes: ["10.88.0.1/24"], AdvertiseRoutesSet: true } })
    await recordError("prefs-route-unparsable", "prefs", { method: "PATCH", body: { AdvertiseRoutes: ["10.88.0.0/99"], AdvertiseRoutesSet: true } })
    await recordError("prefs-bad-json", "prefs", { method: "PATCH", body: "{" })
    await recordError("check-prefs-route-host-bits", "check-prefs", { method: "POST", body: { AdvertiseRoutes: ["10.88.0.1/24"] } })
    await recordError("check-prefs-bad-json", "check-prefs", { method: "POST", body: "{" })
    await recordError("whois-no-match", "whois?addr=100.64.0.99")
    await recordError("whois-no-addr", "whois")
    await recordError("bus-in-process-bit", "watch-ipn-bus?mask=65536")
    await recordError("bus-rate-limit-with-peer-changes", `watch-ipn-bus?mask=${256 + 4096}`)

    progress("recorder: peers")
    const routerHost = tailnet.addHost("router", { routedSubnets: ["192.168.50.0/24"] })
    await tailnet.startNode("router", { host: routerHost, authKey: routerKey, advertiseRoutes: ["192.168.50.0/24"], userspace: true })
    const laptop = await tailnet.startNode("laptop", { host: tailnet.addHost("laptop"), authKey: aliceKey, userspace: true })

    progress("recorder: bring-up over the LocalAPI")
    const bus = await watchIpnBus(ctr.socket, 2 + 4 + 128)
    const fresh = JSON.parse((await localApi(ctr.socket, "prefs")).body)
    const updatePrefs = { ...fresh, ControlURL: tailnet.loginServer, WantRunning: true, Hostname: "ctr-web-1", CorpDNS: false, Config: undefined }
    if ((await localApi(ctr.socket, "start", { method: "POST", body: { AuthKey: taggedKey, UpdatePrefs: updatePrefs } })).status !== 204) throw new Error("start failed")
    if ((await localApi(ctr.socket, "login-interactive", { method: "POST" })).status !== 204) throw new Error("login-interactive failed")
    await bus.waitFor((n) => n.State === 6 || typeof n.ErrMessage === "string", 90_000)
    await bus.waitFor((n) => n.Health !== undefined && (n.Health as { Warnings: unknown }).Warnings === null, 30_000).catch(() => undefined)
    await new Promise((r) => setTimeout(r, 2000))
    bus.close()
    writeText(path.join(options.localApiDir, "bus.ndjson"), bus.raw(), scrub)

    writeText(path.join(options.localApiDir, "prefs.json"), (await localApi(ctr.socket, "prefs")).body, scrub)
    const patched = await localApi(ctr.socket, "prefs", { method: "PATCH", body: { AdvertiseRoutes: ["10.88.0.0/24"], AdvertiseRoutesSet: true } })
    writeText(path.join(options.localApiDir, "prefs-patched.json"), patched.body, scrub)

    progress("recorder: route approval")
    await until("router and ctr-web-1 announcing their routes", async () => {
      const listed = (await call("GET", "/api/v1/node")).body.nodes as Array<{ id: string; availableRoutes: Array<string> }>
      return listed.find((n) => n.id === "1")?.availableRoutes.length === 1 && listed.find((n) => n.id === "3")?.availableRoutes.length === 1
    })
    await record("node", "GET", "/api/v1/node/1")
    await record("approve-routes", "POST", "/api/v1/node/1/approve_routes", { routes: ["192.168.50.0/24"] })
    await record("approve-routes-tagged", "POST", "/api/v1/node/3/approve_routes", { routes: ["10.88.0.0/24"] })
    await record("node-approved", "GET", "/api/v1/node/1")
    await record("node-tagged", "GET", "/api/v1/node/3")
    await record("approve-routes-missing-node", "POST", "/api/v1/node/99/approve_routes", { routes: ["10.1.0.0/24"] })
    await record("approve-routes-bad-route", "POST", "/api/v1/node/1/approve_routes", { routes: ["bogus"] })
    await record("node-missing", "GET", "/api/v1/node/99")
    await record("node-bad-id", "GET", "/api/v1/node/abc")
    await record("apikeys", "GET", "/api/v1/apikey")

    progress("recorder: peers seen by ctr-web-1")
    await laptop.stop()
    // Headscale 0.29 tells a node about its own approved routes only in answer to its next map
    // request: a Hostinfo change (shields up and down again) makes ctr-web-1 send one
    for (const shieldsUp of [true, false]) {
      await localApi(ctr.socket, "prefs", { method: "PATCH", body: { ShieldsUp: shieldsUp, ShieldsUpSet: true } })
    }
    let lastStatus = ""
    await waitUntil("the netmap of ctr-web-1 settling", async () => {
      lastStatus = (await localApi(ctr.socket, "status")).body
      const status = JSON.parse(lastStatus)
      const peers = Object.values(status.Peer ?? {}) as Array<{ HostName: string; Online: boolean; PrimaryRoutes?: Array<string> }>
      const settled = status.Self.PrimaryRoutes?.length === 1 && peers.length === 2 &&
        peers.find((p) => p.HostName === "router")?.PrimaryRoutes?.length === 1 && peers.find((p) => p.HostName === "laptop")?.Online === false
      return settled || undefined
    }, 60_000, () => lastStatus)
    await record("nodes", "GET", "/api/v1/node")
    await record("nodes-by-user", "GET", "/api/v1/node?user=containers")
    writeText(path.join(options.localApiDir, "status-running.json"), (await localApi(ctr.socket, "status")).body, scrub)
    writeText(path.join(options.localApiDir, "status-running-nopeers.json"), (await localApi(ctr.socket, "status?peers=false")).body, scrub)
    writeText(path.join(options.localApiDir, "whois.json"), (await localApi(ctr.socket, "whois?addr=100.64.0.1:22&proto=tcp")).body, scrub)

    progress("recorder: a login Headscale refuses")
    const refused = await startBareTailscaled(tailnet, "ctr-refused", { userspace: true })
    daemons.push(refused)
    const refusedBus = await watchIpnBus(refused.socket, 2)
    const refusedPrefs = { ...updatePrefs, Hostname: "ctr-refused", AdvertiseTags: ["tag:container"] }
    await localApi(refused.socket, "start", { method: "POST", body: { AuthKey: taggedKey, UpdatePrefs: refusedPrefs } })
    await localApi(refused.socket, "login-interactive", { method: "POST" })
    await refusedBus.waitFor((n) => typeof n.ErrMessage === "string", 60_000)
    await new Promise((r) => setTimeout(r, 1000))
    refusedBus.close()
    writeText(path.join(options.localApiDir, "bus-refused.ndjson"), refusedBus.raw(), scrub)
    writeText(path.join(options.localApiDir, "status-refused.json"), (await localApi(refused.socket, "status")).body, scrub)

    progress("recorder: logout and deletion")
    if ((await localApi(ctr.socket, "logout", { method: "POST" })).status !== 204) throw new Error("logout failed")
    await record("nodes-after-logout", "GET", "/api/v1/node")
    await record("delete-node", "DELETE", "/api/v1/node/2")
    await record("delete-node-missing", "DELETE", "/api/v1/node/2")

    writeJson(path.join(options.localApiDir, "errors.json"), errors, scrub)
    writeJson(path.join(options.headscaleDir, "answers-0.29.json"), answers, scrub)
  } finally {
    // the tailnet stops its own nodes; the bare daemons are ours
    await Promise.all(daemons.map((d) => d.stop().catch(() => undefined)))
    await tailnet.close()
  }
}

const recordLegacy = async (options: RecordOptions, scrub: Scrubber, progress: (line: string) => void) => {
  const tailnet = await startRealTailnet({ headscale: "0.25" })
  try {
    const apiKey = await tailnet.createApiKey()
    scrub.add(apiKey)
    const { answers, call, record } = headscaleRecorder(tailnet, apiKey, scrub)
    progress("recorder: Headscale 0.25")
    await record("version", "GET", "/version", undefined, null)
    await record("health", "GET", "/health", undefined, null)
    await record("unauthorized", "GET", "/api/v1/node", undefined, null)
    await record("unauthorized-wrong-key", "GET", "/api/v1/node", undefined, `AAAAAAA.${"B".repeat(32)}`)
    await record("routes-none", "GET", "/api/v1/routes")
    await record("user-create", "POST", "/api/v1/user", { name: "containers", email: "containers@example.com" })
    await record("users", "GET", "/api/v1/user")
    const created = await record("preauthkey-create", "POST", "/api/v1/preauthkey", { user: "containers", reusable: true, ephemeral: true, expiration: inAnHour(), aclTags: ["tag:container"] })
    scrub.add(created.body.preAuthKey.key)
    const untagged = await record("preauthkey-create-untagged", "POST", "/api/v1/preauthkey", { user: "containers", reusable: true, ephemeral: true, expiration: inAnHour() })
    scrub.add(untagged.body.preAuthKey.key)
    await record("preauthkey-unknown-user", "POST", "/api/v1/preauthkey", { user: "nobody", reusable: true, expiration: inAnHour() })
    await record("preauthkeys", "GET", "/api/v1/preauthkey?user=containers")
    await tailnet.startNode("router", { host: tailnet.addHost("router"), authKey: untagged.body.preAuthKey.key, advertiseRoutes: ["192.168.50.0/24"], userspace: true })
    await tailnet.startNode("exit", { host: tailnet.addHost("exit"), authKey: created.body.preAuthKey.key, userspace: true, upArgs: ["--advertise-exit-node"] })
    await until("three route rows", async () => (await call("GET", "/api/v1/routes")).body.routes.length === 3)
    await record("nodes", "GET", "/api/v1/node")
    await record("node", "GET", "/api/v1/node/1")
    await record("node-missing", "GET", "/api/v1/node/99")
    await record("routes", "GET", "/api/v1/routes")
    await record("node-routes", "GET", "/api/v1/node/1/routes")
    await record("node-routes-missing-node", "GET", "/api/v1/node/99/routes")
    await record("route-enable", "POST", "/api/v1/routes/1/enable")
    await record("route-enable-missing", "POST", "/api/v1/routes/999/enable")
    await record("node-routes-enabled", "GET", "/api/v1/node/1/routes")
    const exitRow = ((await call("GET", "/api/v1/node/2/routes")).body.routes as Array<{ id: string; prefix: string }>).find((r) => r.prefix === "0.0.0.0/0")!
    await record("route-enable-exit", "POST", `/api/v1/routes/${exitRow.id}/enable`)
    await record("routes-exit-enabled", "GET", "/api/v1/node/2/routes")
    await record("route-disable", "POST", "/api/v1/routes/1/disable")
    await record("apikeys", "GET", "/api/v1/apikey")
    await record("delete-node-missing", "DELETE", "/api/v1/node/99")
    writeJson(path.join(options.headscaleDir, "answers-0.25.json"), answers, scrub)
  } finally {
    await tailnet.close()
  }
}

/** Records both tailnets (about a minute); every namespace, daemon and folder goes even when a step fails. */
export const recordRealAnswers = async (options: RecordOptions): Promise<void> => {
  const progress = options.progress ?? ((line: string) => process.stderr.write(`${line}\n`))
  fs.mkdirSync(options.localApiDir, { recursive: true })
  fs.mkdirSync(options.headscaleDir, { recursive: true })
  const scrub = new Scrubber()
  await recordCurrent(options, scrub, progress)
  await recordLegacy(options, scrub, progress)
}

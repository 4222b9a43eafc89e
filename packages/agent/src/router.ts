import { layerIproute2, Netlink } from "@containerscale/core"
import { makeLocalApi, maskPrefs } from "@containerscale/core/member"
import { Effect, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import type { Logger } from "./log.ts"

/**
 * Router mode on the tailnet: the node's pod CIDRs become subnet routes of the node's tailscaled.
 * One pass reads its prefs, adds the pod CIDRs to `AdvertiseRoutes` (keeping every other route,
 * and dropping only pod CIDRs this agent advertised before and that are no longer the node's),
 * keeps IP forwarding on, and asks the control plane to approve them for this node. What the agent
 * advertised is kept in `<stateDir>/router.json`, so a changed pod CIDR replaces the old one.
 */

export interface Approver {
  /** Approves `routes` for `nodeId` only, keeping what it had; says what was done. */
  readonly approve: (nodeId: string, routes: ReadonlyArray<string>) => Effect.Effect<string, { readonly message: string }>
}

export interface RouterOptions {
  readonly stateDir: string
  readonly socket: string
  readonly podCidrs: Effect.Effect<ReadonlyArray<string>, { readonly message: string }>
  readonly approver?: Approver | undefined
  readonly log: Logger
  /** where the forwarding sysctls go: the agent's own namespace when undefined (tests pass a stand-in node's) */
  readonly nodeNetns?: string | undefined
}

export interface RouterReport {
  readonly ok: boolean
  /** what is wrong when not ok */
  readonly reason?: string | undefined
  readonly podCidrs: ReadonlyArray<string>
  readonly advertised: ReadonlyArray<string>
  readonly added: ReadonlyArray<string>
  readonly removed: ReadonlyArray<string>
  readonly approval?: string | undefined
  /** the routes the control plane lets this node serve (`Self.PrimaryRoutes`) */
  readonly serving: ReadonlyArray<string>
}

const RouterState = Schema.Struct({ advertised: Schema.Array(Schema.String) })

const stateFile = (stateDir: string) => path.join(stateDir, "router.json")

const readAdvertisedBefore = (stateDir: string): ReadonlyArray<string> => {
  try {
    return Schema.decodeUnknownSync(RouterState)(JSON.parse(fs.readFileSync(stateFile(stateDir), "utf8"))).advertised
  } catch {
    return []
  }
}

const writeAdvertised = (stateDir: string, advertised: ReadonlyArray<string>) => {
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 })
  fs.writeFileSync(`${stateFile(stateDir)}.tmp`, JSON.stringify({ advertised }), { mode: 0o600 })
  fs.renameSync(`${stateFile(stateDir)}.tmp`, stateFile(stateDir))
}

const forwardingKeys = (cidrs: ReadonlyArray<string>) =>
  [...new Set(cidrs.map((c) => (c.includes(":") ? "net.ipv6.conf.all.forwarding" : "net.ipv4.ip_forward")))]

/** One reconcile pass. Fails with a message when a step cannot be done; the caller retries. */
export const reconcileRouter = (options: RouterOptions): Effect.Effect<RouterReport, { readonly message: string }> =>
  Effect.gen(function*(): Effect.fn.Return<RouterReport, { readonly message: string }> {
    const api = makeLocalApi({ socket: options.socket, timeout: "10 seconds" })
    const podCidrs = yield* options.podCidrs
    const status = yield* api.status({ peers: false })
    const base = { podCidrs, added: [] as Array<string>, removed: [] as Array<string>, serving: status.Self.PrimaryRoutes ?? [] }
    if (status.BackendState !== "Running") {
      return { ...base, ok: false, reason: `the node's tailscaled is ${status.BackendState}, not Running`, advertised: [] }
    }
    const prefs = yield* api.prefs()
    const current = prefs.AdvertiseRoutes ?? []
    const before = readAdvertisedBefore(options.stateDir)
    const removed = current.filter((r) => before.includes(r) && !podCidrs.includes(r))
    const added = podCidrs.filter((r) => !current.includes(r))
    const wanted = [...current.filter((r) => !removed.includes(r)), ...added]
    if (added.length > 0 || removed.length > 0) {
      yield* api.editPrefs(maskPrefs({ AdvertiseRoutes: wanted }))
      options.log.info("advertised routes changed", { added, removed, advertised: wanted })
    }
    yield* Effect.sync(() => writeAdvertised(options.stateDir, podCidrs))
    yield* Effect.gen(function*() {
      const netlink = yield* Netlink
      for (const key of forwardingKeys(podCidrs)) yield* netlink.setSysctl(key, "1", options.nodeNetns)
    }).pipe(Effect.provide(layerIproute2))
    const approval = options.approver === undefined || podCidrs.length === 0
      ? undefined
      : yield* options.approver.approve(status.Self.ID, podCidrs)
    const after = yield* api.status({ peers: false })
    const serving = after.Self.PrimaryRoutes ?? []
    const missing = options.approver === undefined ? [] : podCidrs.filter((c) => !serving.includes(c))
    return {
      ...base,
      ok: missing.length === 0,
      reason: missing.length === 0 ? undefined : `not yet served by this node: ${missing.join(", ")} (approval pending)`,
      advertised: wanted,
      added,
      removed,
      approval,
      serving
    }
  })

import { InvalidNetworkConfig, MemberOptions, type Spelling } from "@containerscale/core"
import { describeIssue } from "@containerscale/core/internal"
import { Member, type MemberAttachment, type MemberNetwork, withMagicDns } from "@containerscale/core/member"
import { Effect, Schema } from "effect"
import { decodePrevResult } from "./result.ts"
import { type CniRequest, containerNetns, type GcRequest, type Plugin } from "./skel.ts"

/**
 * The `containerscale` plugin in member mode: chained after an interface plugin, it makes the
 * container its own tailnet node (the core's `Member` workflow) and adds the tailnet interface,
 * addresses and MagicDNS to the result it was given.
 */

/** The member options as a CNI config spells them; `runtimeConfig.authKey` (the runtime's, per container) is the `authKey`. */
const MemberConfig = Schema.Struct({
  ...MemberOptions.fields,
  runtimeConfig: Schema.optional(Schema.Struct({ authKey: Schema.optional(Schema.String) }))
})
const decodeMemberConfig = Schema.decodeUnknownEffect(MemberConfig, { errors: "all" })

/** A CNI config names the options by their own names, as JSON keys. */
export const cniSpelling: Spelling = {
  name: (option) => (option === "timeout" ? "timeoutSeconds" : option),
  set: (option, value) => `"${option}": ${JSON.stringify(value)}`,
  environment: "the environment the container runtime runs the plugin with",
  reader: "the plugin, as the container runtime's user"
}

/** A member network as a CNI config describes it. */
export const memberNetworkOf = (request: Pick<GcRequest, "raw" | "env">): Effect.Effect<MemberNetwork, InvalidNetworkConfig> =>
  decodeMemberConfig(request.raw).pipe(
    Effect.mapError((e) => new InvalidNetworkConfig({ message: `invalid network configuration: ${describeIssue(e.issue)}` })),
    Effect.map(({ runtimeConfig, ...options }) => ({
      options: { ...options, authKey: runtimeConfig?.authKey ?? options.authKey },
      env: request.env,
      spelling: cniSpelling
    }))
  )

const attachmentOf = (request: CniRequest): MemberAttachment => ({
  network: request.config.name,
  containerId: request.containerId,
  ifname: request.ifname,
  netns: request.netns,
  name: request.args.get("K8S_POD_NAME"),
  namespace: request.args.get("K8S_POD_NAMESPACE")
})

const prevOf = (request: CniRequest, what: string) =>
  decodePrevResult(request.raw.prevResult).pipe(
    Effect.mapError(() =>
      new InvalidNetworkConfig({
        message: `${what}: member mode runs chained after an interface plugin (bridge, ptp, or containerscale in router mode) ` +
          `and needs its result as "prevResult"`
      })
    )
  )

export const memberPlugin: Plugin<Member> = {
  add: Effect.fnUntraced(function*(request) {
    const prev = yield* prevOf(request, "ADD")
    const netns = yield* containerNetns(request)
    const joined = yield* (yield* Member).join(yield* memberNetworkOf(request), { ...attachmentOf(request), netns })
    const interfaces = [...(prev.interfaces ?? [])]
    const device = joined.device === undefined ? {} : { interface: interfaces.length }
    if (joined.device !== undefined) interfaces.push({ ...joined.device, sandbox: netns })
    const dns = withMagicDns(prev.dns ?? {}, joined)
    return {
      ...prev,
      interfaces,
      ips: [...(prev.ips ?? []), ...joined.addresses.map((address) => ({ address, ...device }))],
      ...(dns === undefined ? {} : { dns })
    }
  }),

  del: Effect.fnUntraced(function*(request) {
    yield* (yield* Member).leave(yield* memberNetworkOf(request), attachmentOf(request))
  }),

  check: Effect.fnUntraced(function*(request) {
    const prev = yield* prevOf(request, "CHECK")
    const recorded = (prev.ips ?? []).map((ip) => ip.address)
    yield* (yield* Member).check(yield* memberNetworkOf(request), attachmentOf(request), recorded)
  }),

  gc: Effect.fnUntraced(function*(request) {
    if (request.valid === undefined) return
    yield* (yield* Member).gc(yield* memberNetworkOf(request), request.config.name, request.valid)
  }),

  status: Effect.fnUntraced(function*(request) {
    yield* (yield* Member).status(yield* memberNetworkOf(request))
  })
}

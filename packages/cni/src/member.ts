import { CheckFailed, InvalidNetworkConfig, NotAvailable } from "@containerscale/core"
import {
  findMember,
  joinMember,
  leaveMember,
  listMembers,
  makeLocalApi,
  type Member,
  memberCommandMissing,
  memberPaths,
  resolveMemberSettings,
  type Workload
} from "@containerscale/core/member"
import { Effect, Option } from "effect"
import * as fs from "node:fs"
import { type CniResult, decodePrevResult } from "./result.ts"
import type { CniRequest, Plugin } from "./skel.ts"

/**
 * The `containerscale` plugin in member mode: chained after an interface plugin, it makes the
 * container its own tailnet node (a tailscaled inside its namespace) and adds the tailnet
 * interface and addresses to the result it was given.
 */

const QUAD_100 = "100.100.100.100"

const workloadOf = (request: Pick<CniRequest, "containerId" | "args">): Workload => ({
  containerId: request.containerId,
  podName: request.args.get("K8S_POD_NAME"),
  podNamespace: request.args.get("K8S_POD_NAMESPACE")
})

const settingsOf = (request: CniRequest, withAuthKey = false) =>
  resolveMemberSettings(request.raw, request.config.name, workloadOf(request), request.env, { withAuthKey })

/** A locally administered MAC for the TUN device (it has none), stable per node address: Podman wants one. */
const pseudoMac = (address: string) => {
  let h = 0x811c9dc5
  for (let i = 0; i < address.length; i++) h = Math.imul(h ^ address.charCodeAt(i), 0x01000193)
  const bytes = [0x02, 0x00, (h >>> 24) & 255, (h >>> 16) & 255, (h >>> 8) & 255, h & 255]
  return bytes.map((b) => b.toString(16).padStart(2, "0")).join(":")
}

const resultOf = (prev: CniResult, member: Member, netns: string, magicDns: boolean): CniResult => {
  const interfaces = [...(prev.interfaces ?? [])]
  const index = member.tun === undefined ? undefined : interfaces.length
  if (member.tun !== undefined) interfaces.push({ name: member.tun, mac: pseudoMac(member.addresses[0]!), sandbox: netns })
  const dns = prev.dns ?? {}
  return {
    ...prev,
    interfaces,
    ips: [
      ...(prev.ips ?? []),
      ...member.addresses.map((a) => ({ address: `${a}/${a.includes(":") ? 128 : 32}`, ...(index === undefined ? {} : { interface: index }) }))
    ],
    dns: magicDns && member.magicDnsSuffix !== undefined
      ? {
        ...dns,
        nameservers: [QUAD_100, ...(dns.nameservers ?? []).filter((n) => n !== QUAD_100)],
        search: [member.magicDnsSuffix, ...(dns.search ?? []).filter((s) => s !== member.magicDnsSuffix)]
      }
      : dns
  }
}

const prevOf = (request: CniRequest, what: string) =>
  decodePrevResult(request.raw.prevResult).pipe(
    Effect.mapError(() =>
      new InvalidNetworkConfig({
        message: `${what}: member mode runs chained after an interface plugin (bridge, ptp, or containerscale in router mode) ` +
          `and needs its result as "prevResult"`
      })
    )
  )

export const memberPlugin: Plugin = {
  add: Effect.fnUntraced(function*(request) {
    const prev = yield* prevOf(request, "ADD")
    const settings = yield* settingsOf(request, true)
    const member = yield* joinMember({
      stateDir: settings.memberRoot,
      network: request.config.name,
      containerId: request.containerId,
      ifname: request.ifname,
      netns: request.netns!,
      identity: settings.identity,
      persistent: settings.persistent,
      tailscaled: settings.tailscaled,
      userspace: settings.userspace,
      extraFlags: settings.extraFlags,
      prefs: settings.prefs,
      authKey: settings.authKey,
      timeout: `${settings.timeoutSeconds} seconds`
    })
    return resultOf(prev, member, request.netns!, settings.magicDns)
  }),

  del: Effect.fnUntraced(function*(request) {
    const settings = yield* settingsOf(request)
    const found = findMember(settings.memberRoot, request.containerId, request.ifname)
    if (Option.isNone(found) || found.value.network !== request.config.name) return
    yield* leaveMember({ stateDir: settings.memberRoot, identity: found.value.identity, keepState: found.value.persistent })
  }),

  check: Effect.fnUntraced(function*(request) {
    const prev = yield* prevOf(request, "CHECK")
    const settings = yield* settingsOf(request)
    const who = `container ${request.containerId} (${request.ifname})`
    const found = findMember(settings.memberRoot, request.containerId, request.ifname)
    if (Option.isNone(found)) return yield* new CheckFailed({ message: `${who} has no tailnet member record: delete and re-add it` })
    if (!found.value.running) return yield* new CheckFailed({ message: `the tailscaled of ${who} is not running: delete and re-add it` })
    const { socket } = memberPaths(settings.memberRoot, found.value.identity)
    const status = yield* makeLocalApi({ socket, timeout: "5 seconds" }).status({ peers: false }).pipe(
      Effect.mapError((e) => new CheckFailed({ message: `the tailscaled of ${who} does not answer: ${e.message}` }))
    )
    if (status.BackendState !== "Running") {
      return yield* new CheckFailed({ message: `the tailscaled of ${who} is ${status.BackendState}, not Running: delete and re-add it` })
    }
    const have = new Set(status.Self.TailscaleIPs ?? [])
    const recorded = (prev.ips ?? []).map((ip) => ip.address.split("/")[0]!).filter((ip) => /^100\.|^fd7a:115c:a1e0:/i.test(ip))
    const lost = recorded.filter((ip) => !have.has(ip))
    if (recorded.length === 0 || lost.length > 0) {
      return yield* new CheckFailed({
        message: `${who} is on the tailnet as ${[...have].join(", ") || "nothing"}, not as recorded (${recorded.join(", ") || "none"}): delete and re-add it`
      })
    }
  }),

  gc: Effect.fnUntraced(function*(request) {
    if (request.valid === undefined) return
    const settings = yield* resolveMemberSettings(request.raw, request.config.name, { containerId: "" }, request.env, { withAuthKey: false })
    const valid = new Set(request.valid.map((a) => `${a.containerId}:${a.ifname}`))
    const failures: Array<string> = []
    for (const m of listMembers(settings.memberRoot)) {
      if (m.network !== request.config.name || valid.has(`${m.containerId}:${m.ifname}`)) continue
      yield* leaveMember({ stateDir: settings.memberRoot, identity: m.identity, keepState: m.persistent }).pipe(
        Effect.catch((e) => Effect.sync(() => failures.push(e.message)))
      )
    }
    if (failures.length > 0) return yield* new NotAvailable({ message: `GC finished with ${failures.length} failure(s): ${failures.join("; ")}` })
  }),

  status: Effect.fnUntraced(function*(request) {
    const settings = yield* resolveMemberSettings(request.raw, request.config.name, { containerId: "" }, request.env, { withAuthKey: false })
    const missing = [settings.tailscaled, "nsenter", "unshare"].flatMap((t) => memberCommandMissing(t) ?? [])
    if (missing.length > 0) {
      return yield* new NotAvailable({ message: `not ready: ${missing.join("; ")}: install tailscale, or set "tailscaledPath"` })
    }
    if (!settings.userspace && !fs.existsSync("/dev/net/tun")) {
      return yield* new NotAvailable({ message: `not ready: /dev/net/tun is missing: load the tun module, or set "userspace": true` })
    }
    yield* Effect.try({
      try: () => fs.mkdirSync(settings.memberRoot, { recursive: true, mode: 0o700 }),
      catch: (e) => new NotAvailable({ message: `not ready: cannot create the state directory ${settings.memberRoot}: ${(e as Error).message}` })
    })
  })
}

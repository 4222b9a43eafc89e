import { Effect, Option } from "effect"
import * as fs from "node:fs"
import { CheckFailed, NotAvailable } from "../errors.ts"
import type { Netlink } from "../netlink/Netlink.ts"
import { LocalApi } from "./LocalApi.ts"
import type { Member } from "./Member.ts"
import { isTailnetAddress, type MemberNetwork, pseudoMac, QUAD_100 } from "./memberNetwork.ts"
import { memberRoot } from "../state.ts"
import { type MemberAttachment, memberStateDir, missingKeyFix, resolveMemberSettings } from "./memberSettings.ts"
import {
  findMember,
  joinMember,
  leaveMember,
  listMembers,
  memberCommandMissing,
  memberFolderProblems,
  memberPaths,
  sweepMemberRoot
} from "./tailscaled.ts"

/** The live `Member`: one tailscaled per container (tailscaled.ts), brought up and asked through its LocalAPI. */

const cidr = (ip: string) => `${ip}/${ip.includes(":") ? 128 : 32}`

const settingsOf = (network: MemberNetwork, attachment: MemberAttachment, withAuthKey = false) =>
  resolveMemberSettings(network.options, attachment, network.env, network.spelling, { withAuthKey })

/** Leaving and collecting find members by their records: they need only the folders' root. */
const rootOf = (network: MemberNetwork) => Effect.map(memberStateDir(network.options, network.env, network.spelling), memberRoot)

export const makeLive = (netlink: Netlink["Service"], localApi: LocalApi["Service"]): Member["Service"] => {
  const client = localApi.client
  const who = (a: MemberAttachment) => `container ${a.containerId} (${a.ifname})`
  const ours = (root: string, a: MemberAttachment) =>
    Option.filter(findMember(root, a.containerId, a.ifname), (m) => m.network === a.network)
  const withLocalApi = <A, E>(effect: Effect.Effect<A, E, LocalApi>) => Effect.provideService(effect, LocalApi, localApi)
  return {
    join: Effect.fnUntraced(function*(network, attachment) {
      const settings = yield* settingsOf(network, attachment, true)
      if (!settings.userspace) {
        // tailscaled puts its fd7a:… address on tailscale0; runtimes switch IPv6 off in IPv4-only namespaces
        for (const key of ["net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"]) {
          yield* Effect.ignore(netlink.setSysctl(key, "0", attachment.netns))
        }
      }
      const node = yield* withLocalApi(joinMember({
        stateDir: settings.memberRoot,
        network: attachment.network,
        containerId: attachment.containerId,
        ifname: attachment.ifname,
        netns: attachment.netns,
        identity: settings.identity,
        persistent: settings.persistent,
        tailscaled: settings.tailscaled,
        userspace: settings.userspace,
        extraFlags: settings.extraFlags,
        prefs: settings.prefs,
        authKey: settings.authKey,
        missingKeyFix: missingKeyFix(network.spelling),
        timeout: `${settings.timeoutSeconds} seconds`
      }))
      return {
        settings,
        addresses: node.addresses.map(cidr),
        device: node.tun === undefined || node.addresses[0] === undefined ? undefined : { name: node.tun, mac: pseudoMac(node.addresses[0]) },
        dns: settings.magicDns && node.magicDnsSuffix !== undefined ? { nameservers: [QUAD_100], search: [node.magicDnsSuffix] } : undefined
      }
    }),

    leave: Effect.fnUntraced(function*(network, attachment) {
      const root = yield* rootOf(network)
      sweepMemberRoot(root)
      const found = ours(root, attachment)
      if (Option.isNone(found)) return false
      yield* withLocalApi(leaveMember({ stateDir: root, identity: found.value.identity, keepState: found.value.persistent }))
      return true
    }),

    check: Effect.fnUntraced(function*(network, attachment, recorded) {
      const settings = yield* settingsOf(network, attachment)
      const found = findMember(settings.memberRoot, attachment.containerId, attachment.ifname)
      if (Option.isNone(found)) return yield* new CheckFailed({ message: `${who(attachment)} has no tailnet member record: delete and re-add it` })
      if (!found.value.running) return yield* new CheckFailed({ message: `the tailscaled of ${who(attachment)} is not running: delete and re-add it` })
      const { socket } = memberPaths(settings.memberRoot, found.value.identity)
      const status = yield* client({ socket, timeout: "5 seconds" }).status({ peers: false }).pipe(
        Effect.mapError((e) => new CheckFailed({ message: `the tailscaled of ${who(attachment)} does not answer: ${e.message}` }))
      )
      if (status.BackendState !== "Running") {
        return yield* new CheckFailed({ message: `the tailscaled of ${who(attachment)} is ${status.BackendState}, not Running: delete and re-add it` })
      }
      const have = new Set(status.Self.TailscaleIPs ?? [])
      const expected = recorded.map((ip) => ip.split("/")[0]!).filter(isTailnetAddress)
      if (expected.length === 0 || expected.some((ip) => !have.has(ip))) {
        return yield* new CheckFailed({
          message: `${who(attachment)} is on the tailnet as ${[...have].join(", ") || "nothing"}, not as recorded (${expected.join(", ") || "none"}): delete and re-add it`
        })
      }
    }),

    gc: Effect.fnUntraced(function*(network, name, valid) {
      const root = yield* rootOf(network)
      const keep = new Set(valid.map((a) => `${a.containerId}:${a.ifname}`))
      const failures: Array<string> = []
      sweepMemberRoot(root)
      for (const m of listMembers(root)) {
        if (m.network !== name || keep.has(`${m.containerId}:${m.ifname}`)) continue
        yield* withLocalApi(leaveMember({ stateDir: root, identity: m.identity, keepState: m.persistent })).pipe(
          Effect.catch((e) => Effect.sync(() => failures.push(e.message)))
        )
      }
      if (failures.length > 0) return yield* new NotAvailable({ message: `GC finished with ${failures.length} failure(s): ${failures.join("; ")}` })
    }),

    status: Effect.fnUntraced(function*(network) {
      const settings = yield* settingsOf(network, { network: "", containerId: "", ifname: "" })
      const missing = [settings.tailscaled, "nsenter", "unshare"].flatMap((t) => memberCommandMissing(t) ?? [])
      if (missing.length > 0) {
        return yield* new NotAvailable({
          message: `not ready: ${missing.join("; ")}: install tailscale, or set ${network.spelling.name("tailscaledPath")}`
        })
      }
      if (!settings.userspace && !fs.existsSync("/dev/net/tun")) {
        return yield* new NotAvailable({
          message: `not ready: /dev/net/tun is missing: load the tun module, or set ${network.spelling.set("userspace", "true")}`
        })
      }
      const unsafe = memberFolderProblems(settings.memberRoot)
      if (unsafe.length > 0) {
        return yield* new NotAvailable({
          message: `not ready: ${unsafe.join("; ")}: containerscale never uses such a member folder; ` +
            `remove it, or make it a directory of the plugin's user with mode 0700`
        })
      }
      yield* Effect.try({
        try: () => fs.mkdirSync(settings.memberRoot, { recursive: true, mode: 0o700 }),
        catch: (e) => new NotAvailable({ message: `not ready: cannot create the state directory ${settings.memberRoot}: ${(e as Error).message}` })
      })
    }),

    state: Effect.fnUntraced(function*(network, attachment) {
      const settings = yield* settingsOf(network, attachment)
      const found = ours(settings.memberRoot, attachment)
      if (Option.isNone(found) || !found.value.running) return "Stopped"
      const { socket } = memberPaths(settings.memberRoot, found.value.identity)
      return yield* client({ socket, timeout: "1 second" }).status({ peers: false }).pipe(
        Effect.map((s) => `${s.BackendState} ${(s.Self?.TailscaleIPs ?? s.TailscaleIPs ?? []).join(" ")}`.trim()),
        Effect.orElseSucceed(() => "Unknown (tailscaled does not answer)")
      )
    })
  }
}

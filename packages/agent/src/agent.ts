import { Ipam, layerIproute2, memberRoot } from "@containerscale/core"
import { gcNode } from "@containerscale/core/gc"
import { listMembers, makeLocalApi, NotifyWatchOpt } from "@containerscale/core/member"
import { Effect, Layer, Queue, Stream } from "effect"
import { gcNetworks, ourNetworks } from "./cli/networks.ts"
import type { AgentConfig } from "./config.ts"
import { AgentFailure } from "./errors.ts"
import { inClusterFromEnv, podCidrsOfNode } from "./kubernetes.ts"
import type { Logger } from "./log.ts"
import { type Approver, reconcileRouter } from "./router.ts"
import { makeSupervisor } from "./supervisor.ts"

/**
 * The agent's loops: router mode on the tailnet (when the node has pod CIDRs), supervision of
 * member-mode tailscaled instances, and GC of what containers left behind. Each loop
 * logs and retries its failures with backoff; none of them ends the agent. Stopping the agent
 * stops the loops only: tailscaled keeps running, so the node's pods stay on the tailnet.
 */

export interface Check {
  readonly ok: boolean
  readonly detail: string
}

export interface AgentState {
  /** what /healthz reports, by name */
  readonly checks: Map<string, Check>
}

export interface AgentHooks {
  readonly reconciled?: (result: "ok" | "pending" | "error") => void
  readonly restarted?: () => void
}

const MAX_BACKOFF_SECONDS = 60

/** /healthz: healthy when every check that ran is (router mode: Running, advertised, served). */
export const healthReport = (state: AgentState) => {
  const checks = Object.fromEntries(state.checks)
  return { ok: Object.values(checks).every((c) => c.ok), checks }
}

/** Member-mode tailnet nodes by state, from the records: running or down (the supervisor restarts those). */
export const tailnetNodesByState = (stateDir: string) => {
  const members = listMembers(memberRoot(stateDir))
  const running = members.filter((m) => m.running).length
  return { running, down: members.length - running }
}

/**
 * Runs `pass` forever: every `seconds` after a success, with doubling backoff after failures, and
 * at once when `wake` completes (then it is awaited again).
 */
export const loop = (
  name: string,
  seconds: number,
  pass: Effect.Effect<boolean, { readonly message: string }>,
  log: Logger,
  wake: Effect.Effect<void> = Effect.never
) =>
  Effect.gen(function*() {
    let failures = 0
    while (true) {
      const ok = yield* pass.pipe(
        Effect.catch((e) => Effect.sync(() => {
          log.warn(`${name} failed; retrying`, { error: e.message, failures: failures + 1 })
          return false
        }))
      )
      failures = ok ? 0 : failures + 1
      const wait = ok ? seconds : Math.min(MAX_BACKOFF_SECONDS, 2 ** Math.min(failures - 1, 6))
      yield* Effect.raceFirst(Effect.sleep(`${wait} seconds`), wake)
    }
  })

/** One GC pass over the networks configured in the CNI conf dir and the member folders. */
const collectLeftovers = (config: AgentConfig, log: Logger, nodeNetns: string | undefined) =>
  Effect.gen(function*() {
    const { networks, errors } = gcNetworks(ourNetworks(config.cniConfDir))
    for (const message of errors) log.warn("GC skips a network", { error: message })
    const report = yield* gcNode({ stateDir: config.stateDir, networks, nodeNetns })
    const removed = report.addresses.length + report.links.length + report.members.length
    if (removed > 0 || report.errors.length > 0) {
      log.info("GC collected leftovers", { addresses: report.addresses, links: report.links, members: report.members, errors: report.errors })
    }
    return report.errors.length === 0
  }).pipe(Effect.provide(Layer.mergeAll(layerIproute2, Ipam.layer())))

/**
 * Watches the node tailscaled's IPN bus and wakes the router pass whenever it (re)enters Running:
 * after a restart or a new login its prefs may have lost the pod CIDRs. Reconnects with backoff.
 */
const watchNodeTailscaled = (socket: string, wakeups: Queue.Queue<void>, log: Logger) =>
  loop(
    "watching the node's tailscaled",
    1,
    Effect.scoped(Effect.gen(function*() {
      const bus = yield* makeLocalApi({ socket, timeout: "10 seconds" }).watchIpnBus(NotifyWatchOpt.InitialState)
      yield* Stream.runForEach(bus, (n) => (n.State === 6 ? Queue.offer(wakeups, undefined) : Effect.void))
      log.debug("the node's tailscaled closed its IPN bus; watching again")
      return true
    })),
    log
  )

export const podCidrSource = (config: AgentConfig, env: Readonly<Record<string, string | undefined>>) => {
  if (config.podCidrs !== undefined) return Effect.succeed(config.podCidrs)
  if (config.kubernetesNode === undefined) return undefined
  const cluster = inClusterFromEnv(env)
  if (cluster === undefined) {
    return Effect.fail(new AgentFailure({ message: `kubernetesNode is set but KUBERNETES_SERVICE_HOST is not: is the agent running in the cluster?` }))
  }
  return podCidrsOfNode(cluster, config.kubernetesNode)
}

export const runAgent = (options: {
  readonly config: AgentConfig
  readonly env: Readonly<Record<string, string | undefined>>
  readonly log: Logger
  readonly state: AgentState
  readonly approver?: Approver | undefined
  readonly hooks?: AgentHooks | undefined
  /** the node's network namespace when the agent does not run in it (tests) */
  readonly nodeNetns?: string | undefined
}) =>
  Effect.gen(function*() {
    const { config, log, state } = options
    const loops: Array<Effect.Effect<never>> = []
    const podCidrs = podCidrSource(config, options.env)
    if (podCidrs === undefined) {
      log.info("router mode off: no pod CIDRs configured (router.podCidrs, CONTAINERSCALE_POD_CIDRS or router.kubernetesNode)")
    } else {
      state.checks.set("router", { ok: false, detail: "the first router pass has not finished" })
      const pass = reconcileRouter({
        stateDir: config.stateDir,
        socket: config.tailscaledSocket,
        podCidrs,
        approver: options.approver,
        log,
        nodeNetns: options.nodeNetns
      }).pipe(
        Effect.tap((report) =>
          Effect.sync(() => {
            state.checks.set("router", { ok: report.ok, detail: report.ok ? `serving ${report.serving.join(", ")}` : report.reason ?? "" })
            options.hooks?.reconciled?.(report.ok ? "ok" : "pending")
            const changed = report.added.length > 0 || report.removed.length > 0 || report.approval !== undefined ||
              report.withdrawal !== undefined
            log[changed || !report.ok ? "info" : "debug"]("router reconciled", {
              ok: report.ok, podCidrs: report.podCidrs, added: report.added, removed: report.removed,
              approval: report.approval, withdrawal: report.withdrawal, serving: report.serving, reason: report.reason
            })
          })
        ),
        Effect.map((report) => report.ok),
        Effect.tapError((e) =>
          Effect.sync(() => {
            state.checks.set("router", { ok: false, detail: e.message })
            options.hooks?.reconciled?.("error")
          })
        )
      )
      const wakeups = yield* Queue.sliding<void>(1)
      loops.push(watchNodeTailscaled(config.tailscaledSocket, wakeups, log) as Effect.Effect<never>)
      loops.push(loop("router reconcile", config.routerIntervalSeconds, pass, log, Queue.take(wakeups)) as Effect.Effect<never>)
    }
    loops.push(loop("GC", config.gcSeconds, collectLeftovers(config, log, options.nodeNetns), log) as Effect.Effect<never>)
    const supervisor = makeSupervisor({ stateDir: config.stateDir, log, events: { restarted: () => options.hooks?.restarted?.() } })
    loops.push(loop("member supervision", config.superviseSeconds, Effect.as(supervisor.pass, true), log) as Effect.Effect<never>)
    log.info("agent started", { stateDir: config.stateDir, metricsAddress: config.metricsAddress, router: podCidrs !== undefined })
    return yield* Effect.all(loops, { concurrency: "unbounded", discard: true }).pipe(Effect.andThen(Effect.never))
  })

import { type Ipam, memberRoot, type Netlink } from "@containerscale/core"
import { gcNode } from "@containerscale/core/gc"
import { ensureNodeDaemon, listMembers, LocalApi, NotifyWatchOpt } from "@containerscale/core/member"
import { Duration, Effect, Queue, Schedule, Stream } from "effect"
import { gcNetworks, ourNetworks } from "./cli/networks.ts"
import type { AgentConfig, NodeDaemonConfig } from "./config.ts"
import { AgentFailure } from "./errors.ts"
import { inClusterFromEnv, podCidrsOfNode } from "./kubernetes.ts"
import { type Approver, reconcileRouter } from "./router.ts"
import { backoff, wakeable } from "./schedule.ts"
import { makeSupervisor } from "./supervisor.ts"

/**
 * The agent's loops: router mode on the tailnet (when the node has pod CIDRs), supervision of
 * member-mode tailscaled instances, and GC of what containers left behind. Each loop
 * logs and retries its failures with backoff; none of them ends the agent. Stopping the agent
 * stops the loops only: tailscaled keeps running, so the node's pods stay on the tailnet.
 * They log through the Effect logger and use the services of the context (`AgentServices`).
 */

/** What the agent's work needs; its main builds them once. */
export type AgentServices = Ipam | Netlink | LocalApi

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
  /** a pass of a loop succeeded: `router`, `gc`, `supervise` or `node-tailscaled` */
  readonly succeeded?: (loop: string) => void
}

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

/** A pass that ran but is not done (approval pending, GC errors): backed off like a failure, not logged as one. */
const notDone = { _tag: "NotDone" } as const
const isNotDone = (u: unknown): u is typeof notDone => u === notDone

/**
 * Runs `pass` forever: every `seconds` after a success; after failures (or `false`) again with
 * the backoff (1, 2, 4 … 60 s), each failure logged; and at once when `wake` completes (then it is
 * awaited again).
 */
export const loop = <R>(
  name: string,
  seconds: number,
  pass: Effect.Effect<boolean, { readonly message: string }, R>,
  wake?: Effect.Effect<void>
): Effect.Effect<never, never, R> => {
  const waits = <O, I>(schedule: Schedule.Schedule<O, I>) => (wake === undefined ? schedule : wakeable(wake)(schedule))
  const retries = backoff.pipe(
    Schedule.setInputType<{ readonly message: string } | typeof notDone>(),
    Schedule.tap(({ attempt, input }) =>
      isNotDone(input) ? Effect.void : Effect.logWarning(`${name} failed; retrying`, { error: input.message, failures: attempt })
    )
  )
  return pass.pipe(
    Effect.flatMap((ok) => (ok ? Effect.void : Effect.fail(notDone))),
    Effect.retry(waits(retries)),
    Effect.repeat(waits(Schedule.spaced(Duration.seconds(seconds)))),
    // neither schedule ends
    Effect.orDie,
    Effect.andThen(Effect.never)
  )
}

/** One GC pass over the networks configured in the CNI conf dir and the member folders. */
const collectLeftovers = (config: AgentConfig, nodeNetns: string | undefined): Effect.Effect<boolean, never, AgentServices> =>
  Effect.gen(function*() {
    const { networks, errors } = gcNetworks(ourNetworks(config.cniConfDir))
    for (const message of errors) yield* Effect.logWarning("GC skips a network", { error: message })
    const report = yield* gcNode({ stateDir: config.stateDir, networks, nodeNetns })
    const removed = report.addresses.length + report.links.length + report.members.length
    if (removed > 0 || report.errors.length > 0) {
      yield* Effect.logInfo("GC collected leftovers", {
        addresses: report.addresses, links: report.links, members: report.members, errors: report.errors
      })
    }
    return report.errors.length === 0
  })

/**
 * Watches the node tailscaled's IPN bus and wakes the router pass whenever it (re)enters Running:
 * after a restart or a new login its prefs may have lost the pod CIDRs. Reconnects with backoff.
 */
const watchNodeTailscaled = (socket: string, wakeups: Queue.Queue<void>) =>
  loop(
    "watching the node's tailscaled",
    1,
    Effect.scoped(Effect.gen(function*() {
      const bus = yield* (yield* LocalApi).client({ socket, timeout: "10 seconds" }).watchIpnBus(NotifyWatchOpt.InitialState)
      yield* Stream.runForEach(bus, (n) => (n.State === 6 ? Queue.offer(wakeups, undefined) : Effect.void))
      yield* Effect.logDebug("the node's tailscaled closed its IPN bus; watching again")
      return true
    }))
  )

/** Daemon mode: keeps the agent's own tailscaled running and logged in; a restarted agent adopts the running one. */
const superviseNodeDaemon = (
  d: NodeDaemonConfig,
  config: AgentConfig,
  state: AgentState,
  nodeNetns: string | undefined,
  noting: <E, R>(pass: Effect.Effect<boolean, E, R>) => Effect.Effect<boolean, E, R>
) =>
  loop(
    "the node's tailscaled",
    config.superviseSeconds,
    noting(ensureNodeDaemon({ ...d, netns: nodeNetns, timeout: "60 seconds" }).pipe(
      Effect.tap(({ pid, started }) => {
        state.checks.set("tailscaled", { ok: true, detail: `the agent's tailscaled (pid ${pid}) is Running` })
        return started ? Effect.logInfo("started the node's tailscaled", { pid, socket: config.tailscaledSocket }) : Effect.void
      }),
      Effect.tapError((e) => Effect.sync(() => state.checks.set("tailscaled", { ok: false, detail: e.message }))),
      Effect.as(true)
    ))
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
  readonly state: AgentState
  readonly approver?: Approver | undefined
  readonly hooks?: AgentHooks | undefined
  /** the node's network namespace when the agent does not run in it (tests) */
  readonly nodeNetns?: string | undefined
}): Effect.Effect<never, never, AgentServices> =>
  Effect.gen(function*() {
    const { config, state } = options
    const loops: Array<Effect.Effect<never, never, AgentServices>> = []
    const noting = <E, R>(name: string, pass: Effect.Effect<boolean, E, R>) =>
      Effect.tap(pass, (ok) => (ok ? Effect.sync(() => options.hooks?.succeeded?.(name)) : Effect.void))
    if (config.nodeDaemon !== undefined) {
      loops.push(superviseNodeDaemon(config.nodeDaemon, config, state, options.nodeNetns, (pass) => noting("node-tailscaled", pass)))
    }
    const podCidrs = podCidrSource(config, options.env)
    if (podCidrs === undefined) {
      yield* Effect.logInfo("router mode off: no pod CIDRs configured (router.podCidrs, CONTAINERSCALE_POD_CIDRS or router.kubernetesNode)")
    } else {
      state.checks.set("router", { ok: false, detail: "the first router pass has not finished" })
      const pass = reconcileRouter({
        stateDir: config.stateDir,
        socket: config.tailscaledSocket,
        podCidrs,
        serviceCidrs: config.serviceCidrs,
        nodePrefs: config.nodePrefs,
        siteId: config.siteId,
        viaOnly: config.viaOnly,
        approver: options.approver,
        nodeNetns: options.nodeNetns
      }).pipe(
        Effect.tap((report) => {
          state.checks.set("router", { ok: report.ok, detail: report.ok ? `serving ${report.serving.join(", ")}` : report.reason ?? "" })
          options.hooks?.reconciled?.(report.ok ? "ok" : "pending")
          const changed = report.added.length > 0 || report.removed.length > 0 || report.prefsChanged.length > 0 ||
            report.approval !== undefined || report.withdrawal !== undefined
          return (changed || !report.ok ? Effect.logInfo : Effect.logDebug)("router reconciled", {
            ok: report.ok, podCidrs: report.podCidrs, added: report.added, removed: report.removed, prefsChanged: report.prefsChanged,
            approval: report.approval, withdrawal: report.withdrawal, serving: report.serving, reason: report.reason
          })
        }),
        Effect.map((report) => report.ok),
        Effect.tapError((e) =>
          Effect.sync(() => {
            state.checks.set("router", { ok: false, detail: e.message })
            options.hooks?.reconciled?.("error")
          })
        )
      )
      const wakeups = yield* Queue.sliding<void>(1)
      loops.push(watchNodeTailscaled(config.tailscaledSocket, wakeups))
      loops.push(loop("router reconcile", config.routerIntervalSeconds, noting("router", pass), Queue.take(wakeups)))
    }
    loops.push(loop("GC", config.gcSeconds, noting("gc", collectLeftovers(config, options.nodeNetns))))
    const supervisor = makeSupervisor({ stateDir: config.stateDir, events: { restarted: () => options.hooks?.restarted?.() } })
    loops.push(loop("member supervision", config.superviseSeconds, noting("supervise", Effect.as(supervisor.pass, true))))
    yield* Effect.logInfo("agent started", { stateDir: config.stateDir, metricsAddress: config.metricsAddress, router: podCidrs !== undefined })
    return yield* Effect.all(loops, { concurrency: "unbounded", discard: true }).pipe(Effect.andThen(Effect.never))
  })

import { memberRoot } from "@containerscale/core"
import { awaitDaemon, leaveMember, listMembers, type MemberRecord, startDaemon } from "@containerscale/core/member"
import { Clock, Duration, Effect, Schedule } from "effect"
import * as fs from "node:fs"
import { backoff } from "./schedule.ts"

/**
 * Supervision of the member-mode tailscaled instances the state directory records: one that died
 * while its container lives is started again (its state makes it the same node, with the same
 * address), with a backoff per member (the `backoff` schedule: a pass skips a member until the
 * delay after its last attempt is over); one whose container's namespace is gone is taken off the
 * tailnet and removed, as DEL would have done.
 */

export interface SupervisorEvents {
  readonly restarted?: (member: MemberRecord) => void
  readonly removed?: (member: MemberRecord) => void
}

interface Restarts {
  /** the next delay of this member's backoff */
  readonly step: (now: number, input: unknown) => Effect.Effect<readonly [unknown, Duration.Duration], unknown>
  attempts: number
  nextAt: number
}

export const makeSupervisor = (options: { readonly stateDir: string; readonly events?: SupervisorEvents }) => {
  const root = memberRoot(options.stateDir)
  const restarts = new Map<string, Restarts>()

  /** One pass over the records; never fails (each member's trouble is logged and retried later). */
  const pass = Effect.gen(function*() {
    const seen = new Set<string>()
    for (const { running, ...member } of listMembers(root)) {
      seen.add(member.identity)
      if (!fs.existsSync(member.netns)) {
        yield* leaveMember({ stateDir: root, identity: member.identity, keepState: member.persistent }).pipe(
          Effect.tap(() => {
            options.events?.removed?.(member)
            return Effect.logInfo("member removed: its container's network namespace is gone", {
              identity: member.identity, containerId: member.containerId, netns: member.netns
            })
          }),
          Effect.catch((e) => Effect.logWarning("cannot remove member", { identity: member.identity, error: e.message }))
        )
        continue
      }
      if (running) {
        restarts.delete(member.identity)
        continue
      }
      const now = yield* Clock.currentTimeMillis
      const b = restarts.get(member.identity) ?? { step: yield* Schedule.toStep(backoff), attempts: 0, nextAt: 0 }
      restarts.set(member.identity, b)
      if (now < b.nextAt) continue
      b.attempts++
      const [, delay] = yield* Effect.orDie(b.step(now, undefined))
      b.nextAt = now + Duration.toMillis(delay)
      yield* startDaemon(root, member).pipe(
        Effect.flatMap((pid) => awaitDaemon(root, member.identity, pid, "15 seconds").pipe(Effect.as(pid))),
        Effect.tap((pid) => {
          options.events?.restarted?.(member)
          return Effect.logInfo("tailscaled restarted", { identity: member.identity, containerId: member.containerId, pid, attempt: b.attempts })
        }),
        Effect.catch((e) =>
          Effect.flatMap(Clock.currentTimeMillis, (at) =>
            Effect.logWarning("cannot restart tailscaled; retrying with backoff", {
              identity: member.identity, error: e.message, retryInMs: b.nextAt - at
            })
          )
        )
      )
    }
    for (const identity of restarts.keys()) if (!seen.has(identity)) restarts.delete(identity)
  })

  return { pass }
}

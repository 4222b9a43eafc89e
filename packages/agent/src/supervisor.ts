import { memberRoot } from "@containerscale/core"
import { awaitDaemon, leaveMember, listMembers, type MemberRecord, startDaemon } from "@containerscale/core/member"
import { Effect } from "effect"
import * as fs from "node:fs"
import type { Logger } from "./log.ts"

/**
 * Supervision of the member-mode tailscaled instances the state directory records: one that died
 * while its container lives is started again (its state makes it the same node, with the same
 * address), with a backoff per member; one whose container's namespace is gone is taken off the
 * tailnet and removed, as DEL would have done.
 */

export interface SupervisorEvents {
  readonly restarted?: (member: MemberRecord) => void
  readonly removed?: (member: MemberRecord) => void
}

interface Backoff {
  attempts: number
  nextAt: number
}

const MAX_BACKOFF_MS = 60_000

export const makeSupervisor = (options: { readonly stateDir: string; readonly log: Logger; readonly events?: SupervisorEvents }) => {
  const root = memberRoot(options.stateDir)
  const backoff = new Map<string, Backoff>()

  /** One pass over the records; never fails (each member's trouble is logged and retried later). */
  const pass = Effect.gen(function*() {
    const seen = new Set<string>()
    for (const { running, ...member } of listMembers(root)) {
      seen.add(member.identity)
      if (!fs.existsSync(member.netns)) {
        yield* leaveMember({ stateDir: root, identity: member.identity, keepState: member.persistent }).pipe(
          Effect.tap(() =>
            Effect.sync(() => {
              options.log.info("member removed: its container's network namespace is gone", {
                identity: member.identity, containerId: member.containerId, netns: member.netns
              })
              options.events?.removed?.(member)
            })
          ),
          Effect.catch((e) => Effect.sync(() => options.log.warn("cannot remove member", { identity: member.identity, error: e.message })))
        )
        continue
      }
      if (running) {
        backoff.delete(member.identity)
        continue
      }
      const b = backoff.get(member.identity) ?? { attempts: 0, nextAt: 0 }
      if (Date.now() < b.nextAt) continue
      b.attempts++
      b.nextAt = Date.now() + Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (b.attempts - 1))
      backoff.set(member.identity, b)
      yield* startDaemon(root, member).pipe(
        Effect.flatMap((pid) => awaitDaemon(root, member.identity, pid, "15 seconds").pipe(Effect.as(pid))),
        Effect.tap((pid) =>
          Effect.sync(() => {
            options.log.info("tailscaled restarted", { identity: member.identity, containerId: member.containerId, pid, attempt: b.attempts })
            options.events?.restarted?.(member)
          })
        ),
        Effect.catch((e) =>
          Effect.sync(() =>
            options.log.warn("cannot restart tailscaled; retrying with backoff", {
              identity: member.identity, error: e.message, retryInMs: b.nextAt - Date.now()
            })
          )
        )
      )
    }
    for (const identity of backoff.keys()) if (!seen.has(identity)) backoff.delete(identity)
  })

  return { pass }
}

import { Duration, Effect, Schedule } from "effect"

/** After failures: 1, 2, 4 … 32 s, then 60 s, for as long as they last. */
export const backoff: Schedule.Schedule<Duration.Duration> = Schedule.min([
  Schedule.exponential("1 second"),
  Schedule.spaced("60 seconds")
])

/**
 * `schedule`, but each wait ends early when `wake` completes: the wait happens in the step (as
 * a race of the delay and `wake`), and the delay left for the driver is zero.
 */
export const wakeable = (wake: Effect.Effect<void>) => <O, I, E, R>(schedule: Schedule.Schedule<O, I, E, R>): Schedule.Schedule<O, I, E, R> =>
  Schedule.modifyDelay(schedule, ({ duration }) => Effect.as(Effect.raceFirst(Effect.sleep(duration), wake), Duration.zero))

/**
 * The health warnings real tailscaled raises that the stand-in can have: `wantrunning-false`
 * ("Tailscale is stopped."), `warming-up` (wanting to run but not Running yet) and `login-state`
 * (the last login failed), in their two encodings: `Status.Health` strings and `Notify.Health`.
 */

export interface HealthInput {
  /** the backend state name, for wantrunning-false's Args */
  readonly state: string
  readonly wantRunning: boolean
  readonly running: boolean
  /** the last login error, while it stands */
  readonly loginError: string | undefined
}

interface Warning {
  readonly code: string
  readonly severity: string
  readonly title: string
  readonly text: string
  readonly args?: Record<string, string>
  readonly dependsOn?: ReadonlyArray<string>
}

export const loginWarningText = (error: string) => `You are logged out. The last login error was: ${error}`

const warningsOf = (input: HealthInput): Array<Warning> => [
  ...(input.wantRunning ? [] : [{
    code: "wantrunning-false",
    severity: "low",
    title: "Tailscale off",
    text: "Tailscale is stopped.",
    args: { State: input.state },
    dependsOn: ["warming-up"]
  }]),
  ...(input.wantRunning && !input.running ? [{ code: "warming-up", severity: "low", title: "Tailscale is starting", text: "Tailscale is starting. Please wait." }] : []),
  ...(input.loginError === undefined ? [] : [{
    code: "login-state",
    severity: "medium",
    title: "Logged out",
    text: loginWarningText(input.loginError),
    args: { error: input.loginError },
    dependsOn: ["wantrunning-false", "warming-up"]
  }])
]

/** Tracks when each warning started, so `BrokenSince` stays put while it lasts. */
export class HealthTracker {
  private readonly since = new Map<string, string>()
  private last = ""

  private current(input: HealthInput): Array<Warning> {
    const warnings = warningsOf(input)
    for (const code of [...this.since.keys()]) if (!warnings.some((w) => w.code === code)) this.since.delete(code)
    for (const w of warnings) if (!this.since.has(w.code)) this.since.set(w.code, new Date().toISOString())
    return warnings
  }

  /** `Status.Health`: an empty list when healthy, as tailscaled sends it. */
  statusHealth(input: HealthInput): Array<string> {
    return this.current(input).map((w) => w.text)
  }

  /** `Notify.Health` (`health.State`): `Warnings` is null when healthy. */
  notifyHealth(input: HealthInput) {
    const warnings = this.current(input)
    if (warnings.length === 0) return { Warnings: null }
    return {
      Warnings: Object.fromEntries(warnings.map((w) => [w.code, {
        WarnableCode: w.code,
        Severity: w.severity,
        Title: w.title,
        Text: w.text,
        BrokenSince: this.since.get(w.code)!,
        ...(w.args === undefined ? {} : { Args: w.args }),
        ...(w.dependsOn === undefined ? {} : { DependsOn: w.dependsOn })
      }]))
    }
  }

  /** The Notify.Health to publish when the set of warnings changed since the last call; undefined otherwise. */
  changed(input: HealthInput) {
    const key = warningsOf(input).map((w) => `${w.code}:${w.text}`).join("|")
    if (key === this.last) return undefined
    this.last = key
    return this.notifyHealth(input)
  }
}

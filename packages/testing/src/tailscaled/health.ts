/** The login warning real tailscaled raises (`login-state`), in its two encodings. */
export interface LoginWarning {
  readonly error: string
  readonly since: string
}

export const loginWarningText = (w: LoginWarning) => `You are logged out. The last login error was: ${w.error}`

/** `Status.Health`: human-readable strings, or null when healthy. */
export const statusHealth = (w: LoginWarning | undefined): ReadonlyArray<string> | null =>
  w === undefined ? null : [loginWarningText(w)]

/** `Notify.Health` (`health.State`). */
export const notifyHealth = (w: LoginWarning | undefined) => ({
  Warnings: w === undefined
    ? {}
    : {
      "login-state": {
        WarnableCode: "login-state",
        Severity: "medium",
        Title: "Logged out",
        Text: loginWarningText(w),
        BrokenSince: w.since,
        Args: { error: w.error },
        ImpactsConnectivity: true
      }
    }
})

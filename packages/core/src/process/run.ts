/** What a finished child process left: its output and exit code, or why it could not start. */
export type Finished =
  | { readonly _tag: "Exited"; readonly code: number; readonly stdout: string; readonly stderr: string }
  | { readonly _tag: "NotStarted"; readonly reason: string }

export interface RunOptions {
  readonly stdin?: string | undefined
  readonly env?: Readonly<Record<string, string | undefined>> | undefined
  /** pass the child's stderr on to ours instead of capturing it */
  readonly inheritStderr?: boolean | undefined
}

export interface DaemonOptions {
  /** the daemon's stdout and stderr go here (appended) */
  readonly logFile: string
  readonly env?: Readonly<Record<string, string | undefined>> | undefined
}

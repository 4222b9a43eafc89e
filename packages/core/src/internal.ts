/**
 * `@containerscale/core/internal`: what the project's own packages share beyond the public API
 * (the binaries' flag parsing and exit handling, child processes, schema issue text, the journal's
 * checksum). No stability promise: it changes with any release.
 */
export { describeIssue } from "./issue.ts"
export { journalChecksum } from "./ipam/store.ts"
export * from "./main.ts"
export { runProcess, spawnDaemon } from "#run"
export type { DaemonOptions, Finished, RunOptions } from "./process/run.ts"

import { execFileSync } from "node:child_process"

export interface CommandOptions {
  readonly input?: string
  readonly env?: NodeJS.ProcessEnv
  readonly timeoutMs?: number
}

/** Runs a command and returns its stdout; throws with the command line and its stderr when it fails. */
export const runCommand = (file: string, args: ReadonlyArray<string>, options: CommandOptions = {}): string => {
  try {
    return execFileSync(file, args, {
      encoding: "utf8",
      input: options.input ?? "",
      env: options.env ?? process.env,
      timeout: options.timeoutMs ?? 60_000,
      maxBuffer: 64 * 1024 * 1024,
      stdio: ["pipe", "pipe", "pipe"]
    })
  } catch (e) {
    const err = e as { status?: number | null; stderr?: string; stdout?: string; message: string }
    const detail = (err.stderr ?? "").trim() || (err.stdout ?? "").trim() || err.message
    throw new Error(`${file} ${args.join(" ")} failed (exit ${err.status ?? "?"}): ${detail}`)
  }
}

import { Data } from "effect"

/**
 * Errors of the Tailscale LocalAPI client. Like the rest of the core they are `Data.TaggedError`s
 * with a CNI code (110-114) and a message that says what to do. Every one names the socket and
 * the endpoint; none ever carries an auth key (the client scrubs it from daemon messages too).
 */
export const LocalApiCode = {
  NotRunning: 110,
  AccessDenied: 111,
  BadRequest: 112,
  Timeout: 113,
  DaemonError: 114
} as const

interface Fields {
  readonly message: string
  readonly details?: string | undefined
  /** the LocalAPI socket path */
  readonly socket: string
  /** e.g. "GET status", "POST start" */
  readonly endpoint: string
  /** the HTTP status, when the daemon answered */
  readonly status?: number | undefined
}

/** Nothing listens on the socket (missing file, ECONNREFUSED, not a socket). */
export class TailscaledNotRunning extends Data.TaggedError("TailscaledNotRunning")<Fields> {
  get cniCode(): number {
    return LocalApiCode.NotRunning
  }
}

/** The socket cannot be opened (EACCES), or the daemon answered 401/403. */
export class LocalApiAccessDenied extends Data.TaggedError("LocalApiAccessDenied")<Fields> {
  get cniCode(): number {
    return LocalApiCode.AccessDenied
  }
}

/** The daemon rejected the request (400, 404, 405, 412, or `check-prefs` found the prefs invalid). */
export class LocalApiBadRequest extends Data.TaggedError("LocalApiBadRequest")<Fields> {
  get cniCode(): number {
    return LocalApiCode.BadRequest
  }
}

/** No answer within the client's timeout (tailscaled holds requests until its backend is ready). */
export class LocalApiTimeout extends Data.TaggedError("LocalApiTimeout")<Fields & {
  readonly timeoutMillis: number
}> {
  get cniCode(): number {
    return LocalApiCode.Timeout
  }
}

/** The daemon failed the request (5xx, other statuses) or the connection broke mid-answer. */
export class LocalApiDaemonError extends Data.TaggedError("LocalApiDaemonError")<Fields> {
  get cniCode(): number {
    return LocalApiCode.DaemonError
  }
}

/** The daemon answered 2xx with a body that does not decode (unknown version, not tailscaled). */
export class LocalApiUnexpectedAnswer extends Data.TaggedError("LocalApiUnexpectedAnswer")<Fields> {
  get cniCode(): number {
    return LocalApiCode.DaemonError
  }
}

export type LocalApiError =
  | TailscaledNotRunning
  | LocalApiAccessDenied
  | LocalApiBadRequest
  | LocalApiTimeout
  | LocalApiDaemonError
  | LocalApiUnexpectedAnswer

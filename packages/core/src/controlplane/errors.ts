import { Data } from "effect"

/**
 * Errors of the Headscale admin API client (`ControlPlane`). Like the rest of the core they are
 * `Data.TaggedError`s with a CNI code (120-124) and a message that says what to do. Every one
 * names the server and the endpoint; none ever carries the API key or a pre-auth key (the client
 * scrubs both from server messages, and from the URL it shows).
 */
export const ControlPlaneCode = {
  Unreachable: 120,
  Unauthorized: 121,
  NotFound: 122,
  Rejected: 123,
  UnexpectedAnswer: 124
} as const

interface Fields {
  readonly message: string
  /** what the server said (scrubbed), or the connection error */
  readonly details?: string | undefined
  /** the server's base URL, without any user info */
  readonly url: string
  /** e.g. "GET /api/v1/node/7" */
  readonly endpoint: string
  /** the HTTP status, when the server answered */
  readonly status?: number | undefined
}

/** No connection (refused, DNS, TLS, reset), or a proxy in front answered 502/503/504. */
export class ControlPlaneUnreachable extends Data.TaggedError("ControlPlaneUnreachable")<Fields> {
  get cniCode(): number {
    return ControlPlaneCode.Unreachable
  }
}

/** No answer within the client's timeout. */
export class ControlPlaneTimeout extends Data.TaggedError("ControlPlaneTimeout")<Fields & {
  readonly timeoutMillis: number
}> {
  get cniCode(): number {
    return ControlPlaneCode.Unreachable
  }
}

/** 401/403: the API key is wrong, expired or revoked. */
export class ControlPlaneUnauthorized extends Data.TaggedError("ControlPlaneUnauthorized")<Fields> {
  get cniCode(): number {
    return ControlPlaneCode.Unauthorized
  }
}

/** 404, or (up to 0.29, where handlers return plain errors) a 500 saying "not found", or 0.29's 400 "node no longer exists". */
export class ControlPlaneNotFound extends Data.TaggedError("ControlPlaneNotFound")<Fields> {
  get cniCode(): number {
    return ControlPlaneCode.NotFound
  }
}

/** The server refused the request (400, 409, other 4xx, a 500 from a handler), or the client did before sending it. */
export class ControlPlaneRejected extends Data.TaggedError("ControlPlaneRejected")<Fields> {
  get cniCode(): number {
    return ControlPlaneCode.Rejected
  }
}

/** An answer that does not decode, an unexpected status, or a server that is not a supported Headscale. */
export class ControlPlaneUnexpectedAnswer extends Data.TaggedError("ControlPlaneUnexpectedAnswer")<Fields> {
  get cniCode(): number {
    return ControlPlaneCode.UnexpectedAnswer
  }
}

/**
 * Headscale up to 0.25 approves a route by enabling its row, and a row exists only once the node
 * advertised the prefix: retry after the node announced it (tailscaled sends its Hostinfo a moment
 * after it is Running).
 */
export class RouteNotAdvertised extends Data.TaggedError("RouteNotAdvertised")<Fields & {
  readonly nodeId: string
  readonly routes: ReadonlyArray<string>
}> {
  get cniCode(): number {
    return ControlPlaneCode.NotFound
  }
}

export type ControlPlaneError =
  | ControlPlaneUnreachable
  | ControlPlaneTimeout
  | ControlPlaneUnauthorized
  | ControlPlaneNotFound
  | ControlPlaneRejected
  | ControlPlaneUnexpectedAnswer
  | RouteNotAdvertised

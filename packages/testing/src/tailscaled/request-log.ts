/** Every LocalAPI request, kept in memory so tests can assert the call sequence. */
export interface RecordedRequest {
  readonly time: string
  readonly method: string
  readonly path: string
  readonly query: Record<string, string>
  readonly headers: Record<string, string>
  readonly body: string
}

export const REDACTED = "<redacted>"

/** The `start` body with a non-empty AuthKey replaced; bodies that are not JSON are kept only if they cannot hold one. */
export const redactBody = (endpoint: string, body: string): string => {
  if (endpoint !== "start" || body === "") return body
  try {
    const parsed = JSON.parse(body) as unknown
    if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) {
      const options = parsed as Record<string, unknown>
      if (typeof options.AuthKey === "string" && options.AuthKey !== "") options.AuthKey = REDACTED
      return JSON.stringify(options)
    }
    return body
  } catch {
    return body.includes("key") ? REDACTED : body
  }
}

export class RequestLog {
  private readonly entries: Array<RecordedRequest> = []

  constructor(private readonly limit = 10_000) {}

  record(entry: RecordedRequest): void {
    this.entries.push(entry)
    if (this.entries.length > this.limit) this.entries.shift()
  }

  all(): ReadonlyArray<RecordedRequest> {
    return this.entries
  }

  clear(): void {
    this.entries.length = 0
  }
}

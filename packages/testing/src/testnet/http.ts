import type * as http from "node:http"
import { Result, Schema } from "effect"
import { describeIssue } from "./issue.ts"

/** What a handler answers: a JSON value, or plain text when `text` is set. */
export interface Reply {
  readonly status: number
  readonly json?: unknown
  readonly text?: string
  /** instead of the default for JSON or text; null sends none */
  readonly contentType?: string | null
  /** end the JSON with a newline, as Go's json.Encoder does (grpc-gateway does not) */
  readonly newline?: boolean
}

export const json = (status: number, body: unknown): Reply => ({ status, json: body })
export const text = (status: number, body: string): Reply => ({ status, text: body })

const maxBodyBytes = 1 << 20

export class BodyTooLarge extends Error {}

export const readBody = (request: http.IncomingMessage): Promise<string> =>
  new Promise((resolve, reject) => {
    const chunks: Array<Buffer> = []
    let size = 0
    request.on("data", (chunk: Buffer) => {
      size += chunk.length
      if (size > maxBodyBytes) {
        reject(new BodyTooLarge(`request body over ${maxBodyBytes} bytes`))
        request.destroy()
      } else chunks.push(chunk)
    })
    request.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
    request.on("error", reject)
  })

export const send = (response: http.ServerResponse, reply: Reply): void => {
  const body = reply.text ?? `${JSON.stringify(reply.json)}${reply.newline === true ? "\n" : ""}`
  const contentType = reply.contentType !== undefined ? reply.contentType : reply.text !== undefined ? "text/plain; charset=utf-8" : "application/json"
  response.writeHead(reply.status, {
    ...(contentType === null ? {} : { "content-type": contentType }),
    "content-length": Buffer.byteLength(body)
  })
  response.end(body)
}

const snakeToCamel = (key: string) => key.replace(/_([a-z])/g, (_, letter: string) => letter.toUpperCase())

/** Parses a JSON object body; protojson also takes snake_case keys, so they are camelCased. An empty body is `{}`. */
export const parseObject = (body: string): Result.Result<Record<string, unknown>, string> => {
  if (body.trim() === "") return Result.succeed({})
  let value: unknown
  try {
    value = JSON.parse(body)
  } catch (error) {
    return Result.fail(`the body is not JSON: ${(error as Error).message}`)
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return Result.fail("the body must be a JSON object")
  return Result.succeed(Object.fromEntries(Object.entries(value).map(([k, v]) => [snakeToCamel(k), v])))
}

/** Decodes a body with a schema; the failure is a message naming each bad field. */
export const decodeBody = <S extends Schema.ConstraintDecoder<unknown>>(schema: S, body: string): Result.Result<S["Type"], string> => {
  const object = parseObject(body)
  if (Result.isFailure(object)) return object
  const decoded = Schema.decodeUnknownResult(schema)(object.success)
  return Result.isFailure(decoded) ? Result.fail(describeIssue(decoded.failure.issue)) : Result.succeed(decoded.success)
}

import { SchemaIssue } from "effect"

let formatIssue: ReturnType<typeof SchemaIssue.makeFormatterStandardSchemaV1> | undefined

/** A Schema issue as one line: each key path and what was wrong there. */
export const describeIssue = (issue: SchemaIssue.Issue): string =>
  (formatIssue ??= SchemaIssue.makeFormatterStandardSchemaV1())(issue).issues
    .map((i) => `${i.path !== undefined && i.path.length > 0 ? `${i.path.map(String).join(".")}: ` : ""}${i.message}`)
    .join("; ")

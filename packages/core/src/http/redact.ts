/**
 * What the core's HTTP clients do to text from a server before it goes into an error: secrets
 * replaced (a daemon or a server may echo what it was sent), long answers clipped.
 */

export const REDACTED = "<redacted>"

export const clip = (text: string, max = 300) => (text.length > max ? `${text.slice(0, max)}…` : text)

/** Replaces every occurrence of each (non-empty) secret with `<redacted>`. */
export const scrub = (text: string, secrets: ReadonlyArray<string>): string => {
  let out = text
  for (const secret of secrets) {
    if (secret !== "") out = out.split(secret).join(REDACTED)
  }
  return out
}

const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

const randomBytes = (length: number): Uint8Array => crypto.getRandomValues(new Uint8Array(length))

/** Random letters and digits (rejection sampling, so every character is equally likely). */
export const randomAlphanumeric = (length: number): string => {
  let out = ""
  while (out.length < length) {
    for (const byte of randomBytes(length)) {
      if (byte < 248 && out.length < length) out += alphabet[byte % alphabet.length]
    }
  }
  return out
}

export const randomHex = (bytes: number): string => Buffer.from(randomBytes(bytes)).toString("hex")

/** Headscale 0.28+ key shapes: `hskey-<kind>-<12-char prefix>-<secret>`. */
export interface HeadscaleKey {
  readonly prefix: string
  readonly key: string
}

const newKey = (kind: "auth" | "api"): HeadscaleKey => {
  const prefix = randomAlphanumeric(12)
  return { prefix, key: `hskey-${kind}-${prefix}-${randomAlphanumeric(64)}` }
}

export const newAuthKey = (): HeadscaleKey => newKey("auth")
export const newApiKey = (): HeadscaleKey => newKey("api")

/** How Headscale lists a pre-auth key: the prefix only. */
export const maskedAuthKey = (prefix: string): string => `hskey-auth-${prefix}-***`

/** Constant-time string comparison, for secrets. */
export const sameSecret = (a: string, b: string): boolean => {
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  if (x.length !== y.length) return false
  let diff = 0
  for (let i = 0; i < x.length; i++) diff |= x[i]! ^ y[i]!
  return diff === 0
}

export const newMachineKey = (): string => `mkey:${randomHex(32)}`
export const newDiscoKey = (): string => `discokey:${randomHex(32)}`

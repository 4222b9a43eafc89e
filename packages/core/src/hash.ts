/**
 * 64-bit FNV-1a of a text, as 16 hex digits: short stable names (host interfaces, member folders).
 * Not sha256: loading node:crypto costs a compiled plugin ~14 ms of start-up.
 */
export const fnv1a64 = (text: string): string => {
  let h = 0xcbf29ce484222325n
  for (const byte of new TextEncoder().encode(text)) h = ((h ^ BigInt(byte)) * 0x100000001b3n) & 0xffffffffffffffffn
  return h.toString(16).padStart(16, "0")
}

/**
 * Which IPv4 addresses are taken, as bits in blocks of 65,536 addresses, so that a scan for a free
 * address skips 32 taken ones per step instead of asking the holder map one address at a time.
 */
export type V4Bitmap = Map<number, Uint32Array>

export const markV4 = (bitmap: V4Bitmap, value: number, taken: boolean) => {
  const blockIndex = Math.floor(value / 65536)
  let block = bitmap.get(blockIndex)
  if (block === undefined) {
    if (!taken) return
    block = new Uint32Array(2048)
    bitmap.set(blockIndex, block)
  }
  const i = value % 65536
  if (taken) block[i >>> 5]! |= 1 << (i & 31)
  else block[i >>> 5]! &= ~(1 << (i & 31))
}

/** The first address in [from, to] whose bit is clear, or -1. */
export const nextUntakenV4 = (bitmap: V4Bitmap, from: number, to: number): number => {
  let v = from
  while (v <= to) {
    const block = bitmap.get(Math.floor(v / 65536))
    if (block === undefined) return v
    const i = v % 65536
    const bit = i & 31
    const untaken = ~block[i >>> 5]! >>> bit
    if (untaken !== 0) {
      const found = v + 31 - Math.clz32(untaken & -untaken)
      return found <= to ? found : -1
    }
    v += 32 - bit
  }
  return -1
}

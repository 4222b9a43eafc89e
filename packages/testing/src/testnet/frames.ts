/**
 * The relay's framing (see protocol.ts): a 4-byte big-endian length, then one raw IP packet.
 * Streams split and merge writes at will, so the reader keeps partial frames until they complete.
 */

/** Larger than any IP packet without jumbograms. */
export const MAX_FRAME_BYTES = 65_535

export const encodeFrame = (packet: Uint8Array): Buffer => {
  if (packet.length === 0 || packet.length > MAX_FRAME_BYTES) throw new RangeError(`a relay frame holds 1 to ${MAX_FRAME_BYTES} bytes, not ${packet.length}`)
  const frame = Buffer.allocUnsafe(4 + packet.length)
  frame.writeUInt32BE(packet.length, 0)
  frame.set(packet, 4)
  return frame
}

export class FrameReader {
  private pending: Buffer = Buffer.alloc(0)

  /** The packets completed by `chunk`; throws on a length no frame can have (the stream is then unusable). */
  push(chunk: Uint8Array): Array<Buffer> {
    this.pending = this.pending.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.pending, chunk])
    const packets: Array<Buffer> = []
    let offset = 0
    while (this.pending.length - offset >= 4) {
      const length = this.pending.readUInt32BE(offset)
      if (length === 0 || length > MAX_FRAME_BYTES) throw new RangeError(`bad relay frame length ${length}`)
      if (this.pending.length - offset - 4 < length) break
      packets.push(Buffer.from(this.pending.subarray(offset + 4, offset + 4 + length)))
      offset += 4 + length
    }
    this.pending = this.pending.subarray(offset)
    return packets
  }
}

/** Reads one newline-terminated line, then hands over whatever followed it. */
export class LineReader {
  private pending: Buffer = Buffer.alloc(0)
  private readonly maxBytes: number

  constructor(maxBytes = 4096) {
    this.maxBytes = maxBytes
  }

  /** The line (without "\n") and the bytes after it once complete; undefined while incomplete. */
  push(chunk: Uint8Array): { line: string; rest: Buffer } | undefined {
    this.pending = Buffer.concat([this.pending, chunk])
    const end = this.pending.indexOf(0x0a)
    if (end < 0) {
      if (this.pending.length > this.maxBytes) throw new RangeError(`no newline in the first ${this.maxBytes} bytes`)
      return undefined
    }
    return { line: this.pending.subarray(0, end).toString("utf8"), rest: this.pending.subarray(end + 1) }
  }
}

import { assert, describe, it } from "@effect/vitest"
import fc from "fast-check"
import { markV4, nextUntakenV4, type V4Bitmap } from "../src/ipam/bitmap.ts"

/** The bitmap against a plain set, around word and block edges and at the top of the IPv4 space. */
describe("IPv4 taken-address bitmap", () => {
  const bases = [0, 65536 * 3 - 40, 2 ** 31 - 20, 2 ** 32 - 200]
  it("finds the same first untaken address as a linear scan", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...bases),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 199 }), fc.boolean()), { maxLength: 300 }),
        fc.integer({ min: 0, max: 199 }),
        fc.integer({ min: 0, max: 199 }),
        (base, ops, a, b) => {
          const bitmap: V4Bitmap = new Map()
          const taken = new Set<number>()
          for (const [offset, take] of ops) {
            markV4(bitmap, base + offset, take)
            if (take) taken.add(base + offset)
            else taken.delete(base + offset)
          }
          const [from, to] = [base + Math.min(a, b), base + Math.max(a, b)]
          let expected = -1
          for (let v = from; v <= to; v++) {
            if (!taken.has(v)) {
              expected = v
              break
            }
          }
          assert.strictEqual(nextUntakenV4(bitmap, from, to), expected)
        }
      ),
      { numRuns: 300 }
    )
  })
})

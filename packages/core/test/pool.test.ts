import {
  InvalidNetworkConfig,
  Ip,
  isReserved,
  locate,
  type Pool,
  PoolConfig,
  type Range,
  resolvePool
} from "@containerscale/core"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Result, Schema } from "effect"

/** resolvePool must succeed; returns the pool. */
const ok = (config: PoolConfig): Pool => {
  const r = resolvePool(config)
  if (Result.isFailure(r)) assert.fail(`expected success, got: ${r.failure.message}`)
  return r.success
}

/** resolvePool must fail with InvalidNetworkConfig (code 7) whose message contains every fragment. */
const rejects = (config: PoolConfig, ...fragments: ReadonlyArray<string>): string => {
  const r = resolvePool(config)
  if (Result.isSuccess(r)) assert.fail(`expected ${JSON.stringify(config)} to be rejected`)
  const e = r.failure
  assert.instanceOf(e, InvalidNetworkConfig)
  assert.strictEqual(e._tag, "InvalidNetworkConfig")
  assert.strictEqual(e.cniCode, 7)
  for (const f of fragments) assert.include(e.message, f, `message "${e.message}" should mention ${f}`)
  return e.message
}

const fmt = (r: Range, v: bigint) => Ip.formatAddress(r.subnet.family, v)
const addr = (text: string) => Result.getOrThrow(Ip.parseAddress(text)).value

const rangeView = (r: Range) => ({
  subnet: r.subnet.text,
  start: fmt(r, r.start),
  end: fmt(r, r.end),
  gateway: r.gateway === undefined ? undefined : fmt(r, r.gateway)
})

describe("resolvePool: defaults (as host-local)", () => {
  it("IPv4: gateway = subnet+1, rangeStart = subnet+1, rangeEnd = the last usable (before broadcast)", () => {
    const pool = ok({ ranges: [[{ subnet: "10.1.0.0/24" }]] })
    assert.strictEqual(pool.strategy, "sequential")
    assert.strictEqual(pool.rangeSets.length, 1)
    const set = pool.rangeSets[0]!
    assert.strictEqual(set.family, 4)
    assert.strictEqual(set.index, 0)
    assert.strictEqual(set.key, "10.1.0.1-10.1.0.254") // the store's name for the set: its first range
    assert.deepStrictEqual(set.ranges.map(rangeView), [
      { subnet: "10.1.0.0/24", start: "10.1.0.1", end: "10.1.0.254", gateway: "10.1.0.1" }
    ])
    assert.deepStrictEqual(pool.routes, [])
    assert.deepStrictEqual(pool.exclusions, [])
  })

  it("IPv6: gateway = subnet+1, rangeStart = subnet+1, rangeEnd = the last address (no broadcast)", () => {
    const pool = ok({ ranges: [[{ subnet: "fd00:1::/120" }]] })
    const set = pool.rangeSets[0]!
    assert.strictEqual(set.family, 6)
    assert.deepStrictEqual(set.ranges.map(rangeView), [
      { subnet: "fd00:1::/120", start: "fd00:1::1", end: "fd00:1::ff", gateway: "fd00:1::1" }
    ])
  })

  it("the smallest subnets that leave room: IPv4 /30, IPv6 /126", () => {
    assert.deepStrictEqual(ok({ ranges: [[{ subnet: "10.1.0.4/30" }]] }).rangeSets[0]!.ranges.map(rangeView), [
      { subnet: "10.1.0.4/30", start: "10.1.0.5", end: "10.1.0.6", gateway: "10.1.0.5" }
    ])
    assert.deepStrictEqual(ok({ ranges: [[{ subnet: "fd00::4/126" }]] }).rangeSets[0]!.ranges.map(rangeView), [
      { subnet: "fd00::4/126", start: "fd00::5", end: "fd00::7", gateway: "fd00::5" }
    ])
  })

  it("explicit rangeStart, rangeEnd, gateway and strategy are kept", () => {
    const pool = ok({
      ranges: [[{ subnet: "10.1.0.0/24", rangeStart: "10.1.0.10", rangeEnd: "10.1.0.20", gateway: "10.1.0.254" }]],
      strategy: "dense"
    })
    assert.strictEqual(pool.strategy, "dense")
    assert.deepStrictEqual(pool.rangeSets[0]!.ranges.map(rangeView), [
      { subnet: "10.1.0.0/24", start: "10.1.0.10", end: "10.1.0.20", gateway: "10.1.0.254" }
    ])
  })

  it("rangeStart == rangeEnd is a one-address range", () => {
    const pool = ok({ ranges: [[{ subnet: "10.1.0.0/24", rangeStart: "10.1.0.9", rangeEnd: "10.1.0.9" }]] })
    assert.deepStrictEqual(pool.rangeSets[0]!.ranges.map(rangeView), [
      { subnet: "10.1.0.0/24", start: "10.1.0.9", end: "10.1.0.9", gateway: "10.1.0.1" }
    ])
  })

  it("several range sets, one per family, keep their order and index; the key is the first range", () => {
    const pool = ok({
      ranges: [
        [{ subnet: "10.1.0.0/24" }, { subnet: "10.2.0.0/24" }],
        [{ subnet: "fd00:1::/64" }]
      ]
    })
    assert.deepStrictEqual(pool.rangeSets.map((s) => [s.index, s.family, s.key, s.ranges.length]), [
      [0, 4, "10.1.0.1-10.1.0.254", 2],
      [1, 6, "fd00:1::1-fd00:1::ffff:ffff:ffff:ffff", 1]
    ])
  })

  it("two ranges in the same subnet that do not overlap are accepted (host-local accepts them)", () => {
    const pool = ok({
      ranges: [[
        { subnet: "10.1.0.0/24", rangeStart: "10.1.0.10", rangeEnd: "10.1.0.19" },
        { subnet: "10.1.0.0/24", rangeStart: "10.1.0.20", rangeEnd: "10.1.0.29" }
      ]]
    })
    assert.strictEqual(pool.rangeSets[0]!.ranges.length, 2)
  })

  it("two range sets in one subnet get different keys", () => {
    const pool = ok({
      ranges: [
        [{ subnet: "10.1.0.0/24", rangeStart: "10.1.0.10", rangeEnd: "10.1.0.19" }],
        [{ subnet: "10.1.0.0/24", rangeStart: "10.1.0.20", rangeEnd: "10.1.0.29" }]
      ]
    })
    assert.notStrictEqual(pool.rangeSets[0]!.key, pool.rangeSets[1]!.key)
  })
})

describe("resolvePool: rejected configurations name the offending key", () => {
  it("IPv4 /31 and /32 are too small", () => {
    rejects({ ranges: [[{ subnet: "10.1.0.0/31" }]] }, "ranges[0][0]", "10.1.0.0/31", "/30")
    rejects({ ranges: [[{ subnet: "10.1.0.1/32" }]] }, "ranges[0][0]", "10.1.0.1/32", "/30")
  })

  it("IPv6 /127 and /128 are too small", () => {
    rejects({ ranges: [[{ subnet: "fd00::/127" }]] }, "ranges[0][0]", "/126")
    rejects({ ranges: [[{ subnet: "fd00::1/128" }]] }, "ranges[0][0]", "/126")
  })

  it("a too small subnet in a later range names that range", () => {
    rejects({ ranges: [[{ subnet: "10.1.0.0/24" }], [{ subnet: "10.2.0.0/24" }, { subnet: "10.3.0.0/31" }]] }, "ranges[1][1]")
  })

  it("rangeStart after rangeEnd", () => {
    rejects(
      { ranges: [[{ subnet: "10.1.0.0/24", rangeStart: "10.1.0.20", rangeEnd: "10.1.0.10" }]] },
      "ranges[0][0]",
      "rangeStart",
      "rangeEnd",
      "10.1.0.20",
      "10.1.0.10"
    )
  })

  it("rangeStart after the default rangeEnd", () => {
    // rangeStart is the broadcast address, the default rangeEnd is the one before it
    rejects({ ranges: [[{ subnet: "10.1.0.0/24", rangeStart: "10.1.0.255" }]] }, "ranges[0][0]", "rangeStart")
  })

  it("rangeStart, rangeEnd or gateway outside the subnet", () => {
    rejects({ ranges: [[{ subnet: "10.1.0.0/24", rangeStart: "10.1.1.5" }]] }, "ranges[0][0]", "rangeStart", "10.1.1.5", "outside")
    rejects({ ranges: [[{ subnet: "10.1.0.0/24", rangeEnd: "10.2.0.5" }]] }, "ranges[0][0]", "rangeEnd", "10.2.0.5", "outside")
    rejects({ ranges: [[{ subnet: "10.1.0.0/24", gateway: "10.9.9.9" }]] }, "ranges[0][0]", "gateway", "10.9.9.9", "outside")
    rejects({ ranges: [[{ subnet: "fd00::/120", rangeEnd: "fd01::5" }]] }, "ranges[0][0]", "rangeEnd", "outside")
    // the other family is outside too
    rejects({ ranges: [[{ subnet: "10.1.0.0/24", rangeStart: "fd00::5" }]] }, "ranges[0][0]", "rangeStart")
  })

  it("rangeStart, rangeEnd or gateway that are not addresses", () => {
    rejects({ ranges: [[{ subnet: "10.1.0.0/24", rangeStart: "ten" }]] }, "ranges[0][0]", "rangeStart", "ten")
    rejects({ ranges: [[{ subnet: "10.1.0.0/24", rangeEnd: "10.1.0.300" }]] }, "ranges[0][0]", "rangeEnd")
    rejects({ ranges: [[{ subnet: "10.1.0.0/24", gateway: "" }]] }, "ranges[0][0]", "gateway")
  })

  it("a subnet that is not CIDR", () => {
    rejects({ ranges: [[{ subnet: "banana" }]] }, "ranges[0][0]", "banana")
    rejects({ ranges: [[{ subnet: "10.1.0.0" }]] }, "ranges[0][0]", "10.1.0.0")
    rejects({ ranges: [[{ subnet: "10.1.0.0/33" }]] }, "ranges[0][0]")
  })

  it("host bits set, with a hint naming the network address", () => {
    rejects({ ranges: [[{ subnet: "10.1.0.5/24" }]] }, "ranges[0][0]", "10.1.0.5/24", "host bits", "10.1.0.0/24")
    rejects({ ranges: [[{ subnet: "fd00::17/120" }]] }, "ranges[0][0]", "host bits", "fd00::/120")
  })

  it("overlapping ranges inside one set", () => {
    rejects(
      { ranges: [[{ subnet: "10.1.0.0/24" }, { subnet: "10.1.0.128/25" }]] },
      "ranges[0][1]",
      "overlaps",
      "ranges[0][0]"
    )
    rejects(
      {
        ranges: [[
          { subnet: "10.1.0.0/24", rangeStart: "10.1.0.10", rangeEnd: "10.1.0.20" },
          { subnet: "10.1.0.0/24", rangeStart: "10.1.0.20", rangeEnd: "10.1.0.30" }
        ]]
      },
      "ranges[0][1]",
      "overlaps",
      "ranges[0][0]"
    )
  })

  it("overlapping ranges across sets", () => {
    rejects({ ranges: [[{ subnet: "10.1.0.0/24" }], [{ subnet: "10.1.0.0/24" }]] }, "ranges[1][0]", "overlaps", "ranges[0][0]")
    rejects({ ranges: [[{ subnet: "fd00::/64" }], [{ subnet: "fd00::/120" }]] }, "ranges[1][0]", "overlaps", "ranges[0][0]")
  })

  it("IPv4 and IPv6 in one range set", () => {
    rejects({ ranges: [[{ subnet: "10.1.0.0/24" }, { subnet: "fd00::/64" }]] }, "ranges[0][1]", "family")
    rejects({ ranges: [[{ subnet: "fd00::/64" }], [{ subnet: "fd01::/64" }, { subnet: "10.1.0.0/24" }]] }, "ranges[1][1]", "family")
  })

  it("no ranges, an empty range set, or both ranges and subnet", () => {
    rejects({}, "ranges")
    rejects({ ranges: [] }, "ranges")
    rejects({ ranges: [[{ subnet: "10.1.0.0/24" }], []] }, "ranges[1]", "empty")
    rejects({ ranges: [[{ subnet: "10.1.0.0/24" }]], subnet: "10.2.0.0/24" }, "ranges", "subnet")
  })

  it("bad exclusions name exclude", () => {
    rejects({ ranges: [[{ subnet: "10.1.0.0/24" }]], exclude: ["10.1.0.999"] }, "exclude", "10.1.0.999")
    rejects({ ranges: [[{ subnet: "10.1.0.0/24" }]], exclude: ["10.1.0.65/27"] }, "exclude", "host bits", "10.1.0.64/27")
    rejects({ ranges: [[{ subnet: "10.1.0.0/24" }]], exclude: ["x/24"] }, "exclude")
  })

  it("bad routes name routes", () => {
    rejects({ ranges: [[{ subnet: "10.1.0.0/24" }]], routes: [{ dst: "0.0.0.0" }] }, "routes", "dst")
    rejects({ ranges: [[{ subnet: "10.1.0.0/24" }]], routes: [{ dst: "0.0.0.0/0", gw: "gateway" }] }, "routes", "gw")
  })

  it("a bad legacy subnet is reported like a range", () => {
    rejects({ subnet: "10.1.0.0/31" }, "ranges[0][0]", "10.1.0.0/31")
    rejects({ subnet: "10.1.0.0/24", rangeStart: "10.1.0.50", rangeEnd: "10.1.0.40" }, "rangeStart", "rangeEnd")
  })
})

describe("resolvePool: the legacy single-range form", () => {
  it("subnet with defaults", () => {
    const pool = ok({ subnet: "10.5.0.0/16" })
    assert.strictEqual(pool.rangeSets.length, 1)
    assert.deepStrictEqual(pool.rangeSets[0]!.ranges.map(rangeView), [
      { subnet: "10.5.0.0/16", start: "10.5.0.1", end: "10.5.255.254", gateway: "10.5.0.1" }
    ])
  })

  it("subnet with rangeStart, rangeEnd and gateway", () => {
    const pool = ok({ subnet: "10.5.0.0/24", rangeStart: "10.5.0.100", rangeEnd: "10.5.0.200", gateway: "10.5.0.254" })
    assert.deepStrictEqual(pool.rangeSets[0]!.ranges.map(rangeView), [
      { subnet: "10.5.0.0/24", start: "10.5.0.100", end: "10.5.0.200", gateway: "10.5.0.254" }
    ])
  })

  it("routes are kept", () => {
    const pool = ok({ subnet: "10.5.0.0/24", routes: [{ dst: "0.0.0.0/0" }, { dst: "192.168.0.0/16", gw: "10.5.0.1" }] })
    assert.deepStrictEqual(pool.routes, [{ dst: "0.0.0.0/0" }, { dst: "192.168.0.0/16", gw: "10.5.0.1" }])
  })
})

describe("isReserved and locate", () => {
  const pool = ok({
    ranges: [
      [{ subnet: "10.1.0.0/24", rangeStart: "10.1.0.0", rangeEnd: "10.1.0.255" }],
      [{ subnet: "fd00::/120", rangeStart: "fd00::", rangeEnd: "fd00::ff", gateway: "fd00::10" }]
    ],
    exclude: ["10.1.0.7", "10.1.0.64/27", "fd00::20"]
  })
  const v4 = pool.rangeSets[0]!.ranges[0]!
  const v6 = pool.rangeSets[1]!.ranges[0]!

  it("network, gateway and IPv4 broadcast are reserved", () => {
    assert.isTrue(isReserved(pool, v4, addr("10.1.0.0")))
    assert.isTrue(isReserved(pool, v4, addr("10.1.0.1")))
    assert.isTrue(isReserved(pool, v4, addr("10.1.0.255")))
    assert.isFalse(isReserved(pool, v4, addr("10.1.0.2")))
    assert.isFalse(isReserved(pool, v4, addr("10.1.0.254")))
  })

  it("IPv6: network and gateway are reserved, the last address is not (no broadcast)", () => {
    assert.isTrue(isReserved(pool, v6, addr("fd00::")))
    assert.isTrue(isReserved(pool, v6, addr("fd00::10")))
    assert.isFalse(isReserved(pool, v6, addr("fd00::1")))
    assert.isFalse(isReserved(pool, v6, addr("fd00::ff")))
  })

  it("excluded addresses and subnets are reserved, in their own family only", () => {
    assert.isTrue(isReserved(pool, v4, addr("10.1.0.7")))
    assert.isFalse(isReserved(pool, v4, addr("10.1.0.8")))
    assert.isFalse(isReserved(pool, v4, addr("10.1.0.63")))
    assert.isTrue(isReserved(pool, v4, addr("10.1.0.64")))
    assert.isTrue(isReserved(pool, v4, addr("10.1.0.80")))
    assert.isTrue(isReserved(pool, v4, addr("10.1.0.95")))
    assert.isFalse(isReserved(pool, v4, addr("10.1.0.96")))
    assert.isTrue(isReserved(pool, v6, addr("fd00::20")))
    assert.isFalse(isReserved(pool, v6, addr("fd00::21")))
    // exclusion values are compared per family: fd00::7 has the numeric value of 0.0.0.7, not of 10.1.0.7
    assert.isFalse(isReserved(pool, v6, addr("fd00::7")))
  })

  it("exclusions resolve to inclusive numeric bounds", () => {
    assert.deepStrictEqual(
      pool.exclusions.map((e) => [e.family, Ip.formatAddress(e.family, e.from), Ip.formatAddress(e.family, e.to)]),
      [[4, "10.1.0.7", "10.1.0.7"], [4, "10.1.0.64", "10.1.0.95"], [6, "fd00::20", "fd00::20"]]
    )
  })

  it("locate: in a range and free to hand out / reserved / outside the pool", () => {
    const at = (text: string) => locate(pool, Result.getOrThrow(Ip.parseAddress(text)))
    const inside = at("10.1.0.9")
    assert.isTrue("set" in inside && inside.set.index === 0)
    const inside6 = at("fd00::9")
    assert.isTrue("set" in inside6 && inside6.set.index === 1)
    for (const reserved of ["10.1.0.0", "10.1.0.1", "10.1.0.255", "10.1.0.7", "10.1.0.70", "fd00::10", "fd00::20"]) {
      const r = at(reserved)
      assert.isTrue("reason" in r && r.reason.includes("reserved"), `${reserved} should be reserved`)
    }
    for (const outside of ["10.1.1.9", "192.168.0.1", "fd00::100", "fd01::1"]) {
      const r = at(outside)
      assert.isTrue("reason" in r && r.reason.includes("outside the pool"), `${outside} should be outside`)
    }
  })
})

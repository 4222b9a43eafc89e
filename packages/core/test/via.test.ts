import { assert, describe, it } from "@effect/vitest"
import { Result } from "effect"
import { Ip } from "../src/index.ts"

const subnet = (text: string) => Result.getOrThrow(Ip.parseSubnet(text))

describe("4via6 prefixes", () => {
  it("match what tailscale debug via prints", () => {
    // tailscale 1.102.5: `tailscale debug via 7 10.244.0.0/16`, `... 8 ...`, `... 7 10.244.1.5/32`
    assert.strictEqual(Ip.viaPrefix(7, subnet("10.244.0.0/16")), "fd7a:115c:a1e0:b1a:0:7:af4:0/112")
    assert.strictEqual(Ip.viaPrefix(8, subnet("10.244.0.0/16")), "fd7a:115c:a1e0:b1a:0:8:af4:0/112")
    assert.strictEqual(Ip.viaPrefix(7, subnet("10.244.1.5/32")), "fd7a:115c:a1e0:b1a:0:7:af4:105/128")
    assert.strictEqual(Ip.viaPrefix(65535, subnet("192.168.0.0/24")), "fd7a:115c:a1e0:b1a:0:ffff:c0a8:0/120")
  })

  it("refuses what tailscale refuses", () => {
    assert.throws(() => Ip.viaPrefix(65536, subnet("10.0.0.0/8")), /site id is 0 to 65535/)
    assert.throws(() => Ip.viaPrefix(1, subnet("fd10::/64")), /maps IPv4 subnets/)
  })
})

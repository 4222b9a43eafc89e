import { describe, expect, it } from "vitest"
import { parseMask } from "../src/tailscaled/bus.ts"
import { FlagError, parseFlags } from "../src/tailscaled/flags.ts"
import { formatAddress, parseAddress, prefixError } from "../src/tailscaled/ip.ts"
import { applyMaskedPrefs, decodePrefs, newPrefs, PrefsDecodeError } from "../src/tailscaled/prefs.ts"
import { redactBody } from "../src/tailscaled/request-log.ts"
import { answerDns } from "../src/tailscaled/magic-dns.ts"

describe("flags", () => {
  it("takes --flag=value, --flag value and -flag, with tailscaled's defaults", () => {
    expect(parseFlags([])).toMatchObject({
      state: "/var/lib/tailscale/tailscaled.state",
      stateDir: "/var/lib/tailscale",
      socket: "/var/run/tailscale/tailscaled.sock",
      tun: "tailscale0",
      port: 0,
      verbose: 0,
      noLogsNoSupport: false
    })
    expect(parseFlags(["--socket", "/run/x.sock", "-state=mem:", "--tun=userspace-networking", "--port", "41641", "--verbose=2", "--no-logs-no-support"]))
      .toMatchObject({ socket: "/run/x.sock", state: "mem:", stateDir: "", tun: "userspace-networking", port: 41641, verbose: 2, noLogsNoSupport: true })
  })

  it("derives --state from --statedir", () => {
    expect(parseFlags(["--statedir=/var/lib/ts1"])).toMatchObject({ state: "/var/lib/ts1/tailscaled.state", stateDir: "/var/lib/ts1" })
  })

  it("reads PORT and TS_NO_LOGS_NO_SUPPORT from the environment", () => {
    expect(parseFlags([], { PORT: "1234", TS_NO_LOGS_NO_SUPPORT: "true" })).toMatchObject({ port: 1234, noLogsNoSupport: true })
  })

  it("refuses what Go's flag package refuses, with its messages", () => {
    const message = (argv: Array<string>) => {
      try {
        parseFlags(argv)
      } catch (e) {
        return [(e as FlagError).message, (e as FlagError).exitCode]
      }
      return undefined
    }
    expect(message(["--nope"])).toEqual(["flag provided but not defined: -nope", 2])
    expect(message(["--state"])).toEqual(["flag needs an argument: -state", 2])
    expect(message(["--verbose=x"])).toEqual(['invalid value "x" for flag -verbose: parse error', 2])
    expect(message(["--no-logs-no-support=maybe"])).toEqual(['invalid boolean value "maybe" for -no-logs-no-support: parse error', 2])
    expect(message(["run"])?.[1]).toBe(1)
  })
})

describe("prefs", () => {
  it("decodes a partial Prefs with Go zero values (start replaces everything)", () => {
    const prefs = decodePrefs({ WantRunning: true })
    expect(prefs).toMatchObject({ WantRunning: true, CorpDNS: false, NetfilterMode: 0, NoStatefulFiltering: null, AdvertiseRoutes: null, Config: null })
    expect(Object.keys(prefs)[0]).toBe("ControlURL")
    expect(Object.keys(prefs).at(-1)).toBe("Config")
    expect(() => decodePrefs({ WantRunning: "yes" })).toThrow(PrefsDecodeError)
  })

  it("applies only the fields whose …Set is true", () => {
    const next = applyMaskedPrefs(newPrefs(), { Hostname: "h", HostnameSet: true, CorpDNS: false, AutoUpdate: { Check: false, Apply: true }, AutoUpdateSet: { ApplySet: true } })
    expect(next).toMatchObject({ Hostname: "h", CorpDNS: true, AutoUpdate: { Check: true, Apply: true } })
  })

  it("checks prefixes like netip.ParsePrefix plus canonical form", () => {
    expect(prefixError("10.0.0.0/24")).toBeUndefined()
    expect(prefixError("fd00::/64")).toBeUndefined()
    expect(prefixError("10.0.0.1/24")).toBe("route 10.0.0.1/24 has non-address bits set; expected 10.0.0.0/24")
    expect(prefixError("fd00::1/64")).toContain("fd00::/64")
    expect(prefixError("10.0.0.0")).toBe(`netip.ParsePrefix("10.0.0.0"): no '/'`)
    expect(prefixError("10.0.0.0/33")).toBe(`netip.ParsePrefix("10.0.0.0/33"): prefix length out of range`)
    expect(prefixError("10.0.0.0/x")).toBe(`netip.ParsePrefix("10.0.0.0/x"): bad bits after slash: "x"`)
    expect(prefixError("10.0.0.0/08")).toContain("bad bits after slash")
  })

  it("formats IPv6 the way netip does", () => {
    expect(formatAddress(parseAddress("fd7a:115c:a1e0:0:0:0:0:1")!)).toBe("fd7a:115c:a1e0::1")
    expect(formatAddress(parseAddress("::ffff:1.2.3.4")!)).toBe("::ffff:102:304")
  })
})

describe("bus masks and the request log", () => {
  it("parses masks and refuses the combinations tailscaled refuses", () => {
    expect(parseMask("")).toBe(0n)
    expect(parseMask("16518")).toBe(16518n)
    expect(parseMask("65536")).toEqual(expect.any(String))
    expect(parseMask(String(256 + 8192))).toEqual(expect.any(String))
    expect(parseMask("18446744073709551616")).toBe("bad mask")
  })

  it("redacts the auth key of start bodies only", () => {
    expect(JSON.parse(redactBody("start", JSON.stringify({ AuthKey: "tskey-auth-x", UpdatePrefs: null })))).toEqual({ AuthKey: "<redacted>", UpdatePrefs: null })
    expect(redactBody("start", '{"AuthKey":"tskey-auth-x"')).toBe("<redacted>")
    expect(redactBody("prefs", '{"Hostname":"a"}')).toBe('{"Hostname":"a"}')
  })
})

describe("MagicDNS", () => {
  const query = (name: string, type: number) =>
    Uint8Array.from([0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, ...name.split(".").flatMap((l) => [l.length, ...Buffer.from(l)]), 0, 0, type, 0, 1])
  const lookup = { suffix: "ts.test", addresses: (n: string) => (n === "web.ts.test" ? ["100.64.0.7", "fd7a:115c:a1e0::7"] : undefined) }

  it("answers A and AAAA for tailnet names, NXDOMAIN for unknown ones, SERVFAIL outside the suffix", () => {
    const a = answerDns(query("Web.ts.test", 1), lookup)!
    expect([a[0], a[1], a[2]! & 0x80, a[3]! & 0x0f, a[7]]).toEqual([0x12, 0x34, 0x80, 0, 1])
    expect([...a.subarray(a.length - 4)]).toEqual([100, 64, 0, 7])
    const aaaa = answerDns(query("web.ts.test", 28), lookup)!
    expect(aaaa[7]).toBe(1)
    expect(answerDns(query("nope.ts.test", 1), lookup)![3]! & 0x0f).toBe(3)
    expect(answerDns(query("example.com", 1), lookup)![3]! & 0x0f).toBe(2)
  })
})

import { afterAll, assert, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { BIN, NET_ID, network, runPlugin } from "./helpers.ts"

/** The framing and `create`: no namespaces needed. */

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-nv-proto-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

const isError = (o: { exitCode: number | null; json: any; stdout: string }, says: string | RegExp) => {
  assert.notStrictEqual(o.exitCode, 0, o.stdout)
  assert.deepStrictEqual(Object.keys(o.json ?? {}), ["error"], o.stdout)
  if (typeof says === "string") assert.include(o.json.error, says)
  else assert.match(o.json.error, says)
}

describe("containerscale-netavark framing", () => {
  it("is a compiled binary", () => assert.isTrue(fs.existsSync(BIN), `${BIN}: run npm run build`))

  it("info, also without a command", async () => {
    for (const args of [["info"], []]) {
      const o = await runPlugin(args, undefined)
      assert.strictEqual(o.exitCode, 0)
      assert.strictEqual(o.json.api_version, "1.0.0")
      // the package's own version, compiled in
      assert.strictEqual(o.json.version, (JSON.parse(fs.readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version)
    }
  })

  it("unknown command, missing or extra netns argument, malformed or empty stdin: one error object, exit 1", async () => {
    isError(await runPlugin(["frobnicate"], {}), 'unknown command "frobnicate"')
    isError(await runPlugin(["setup"], {}), "network namespace path")
    isError(await runPlugin(["teardown"], {}), "network namespace path")
    isError(await runPlugin(["setup", "/run/netns/x", "y"], {}), "one argument")
    isError(await runPlugin(["create"], "{not json"), "not valid JSON")
    isError(await runPlugin(["create"], ""), "got nothing")
    isError(await runPlugin(["create"], "[1]"), "JSON object")
    isError(await runPlugin(["setup", "/run/netns/x"], "nope"), "not valid JSON")
    isError(await runPlugin(["setup", "/run/netns/x"], { container_id: "a" }), '"network"')
  })

  it("setup of a namespace that does not exist fails cleanly", async () => {
    const o = await runPlugin(["setup", "/run/netns/cs-nv-does-not-exist"], {
      container_id: "ab".repeat(32),
      container_name: "x",
      port_mappings: null,
      network: network(null),
      network_options: { interface_name: "eth0", static_ips: ["10.237.1.5"] }
    })
    isError(o, "does not exist")
  })
})

describe("containerscale-netavark create", () => {
  it("echoes name, id, driver and the fields it does not own; completes mode and mtu (null fields, netavark < 2.0)", async () => {
    const input = { ...network(null), created: "0001-01-01T00:00:00Z", labels: { a: "b" } }
    const o = await runPlugin(["create"], input)
    assert.strictEqual(o.exitCode, 0, o.stdout)
    assert.deepStrictEqual(o.json, { ...input, options: { mode: "router", mtu: "1280" } })
  })

  it("accepts absent optional fields (netavark 2.0) and keeps given options", async () => {
    const input = {
      name: "n2", id: NET_ID, driver: "containerscale-netavark", internal: false, ipv6_enabled: false, dns_enabled: true,
      subnets: [{ subnet: "10.237.9.0/24" }], options: { mtu: "1400" }
    }
    const o = await runPlugin(["create"], input)
    assert.strictEqual(o.exitCode, 0, o.stdout)
    assert.deepStrictEqual(o.json, { ...input, options: { mtu: "1400", mode: "router" } })
  })

  it("member mode: checks the key source at create, warns about a literal key on stderr", async () => {
    const keyFile = path.join(dir, "key")
    fs.writeFileSync(keyFile, "hskey-auth-abc-def\n")
    const ok = await runPlugin(["create"], network({ mode: "member", auth_key_file: keyFile, tags: "tag:ci,web" }))
    assert.strictEqual(ok.exitCode, 0, ok.stdout)
    assert.strictEqual(ok.json.options.mode, "member")
    assert.strictEqual(ok.stderr, "")
    const literal = await runPlugin(["create"], network({ mode: "member", auth_key: "hskey-auth-abc-def" }))
    assert.strictEqual(literal.exitCode, 0, literal.stdout)
    assert.include(literal.stderr, "literal auth_key")
    assert.notInclude(literal.stdout, "warning")
    const fromEnv = await runPlugin(["create"], network({ mode: "member", auth_key_env: "MY_KEY" }), { env: { MY_KEY: "k1" } })
    assert.strictEqual(fromEnv.exitCode, 0, fromEnv.stdout)
    const defaultEnv = await runPlugin(["create"], network({ mode: "member" }), { env: { CONTAINERSCALE_AUTH_KEY: "k1" } })
    assert.strictEqual(defaultEnv.exitCode, 0, defaultEnv.stdout)
  })

  it("rejects bad options with what to fix", async () => {
    const cases: ReadonlyArray<[Record<string, string> | null, string | RegExp, object?]> = [
      [{ colour: "blue" }, /unknown option "colour": valid options are mode, mtu, tags/],
      [{ mode: "bridge" }, 'mode must be "router" or "member"'],
      [{ mtu: "80" }, "mtu must be a whole number"],
      [{ mtu: "lots" }, "mtu must be a whole number"],
      [{ tags: "tag:x" }, "only apply to member mode"],
      [{ mode: "member", auth_key_file: path.join(dir, "missing") }, /cannot read the auth key file .*missing.*ENOENT/],
      [{ mode: "member", auth_key_file: "relative/key" }, "absolute path"],
      [{ mode: "member" }, "member mode needs an auth key"],
      [{ mode: "member", auth_key_env: "NOT_SET_HERE" }, "NOT_SET_HERE, which is not set"],
      [{ mode: "member", auth_key: "a", auth_key_env: "B" }, "give one auth key source"],
      [{ mode: "member", auth_key: "a", login_server: "ftp://x" }, "login_server must be an http(s) URL"],
      [{ mode: "member", auth_key: "a", userspace: "yes" }, 'userspace must be "true" or "false"'],
      [{ mode: "member", auth_key: "a", tags: "tag:a b" }, "tags must be a comma-separated list"],
      [{ mode: "member", auth_key: "a", timeout: "never" }, "timeout must be seconds"],
      [{ state_dir: "relative" }, "state_dir must be an absolute path"]
    ]
    for (const [options, says] of cases) {
      const o = await runPlugin(["create"], network(options))
      isError(o, says)
    }
  })

  it("needs a subnet and Podman's host-local IPAM; requires name, id and driver", async () => {
    isError(await runPlugin(["create"], { ...network(null), subnets: null }), "needs a subnet")
    isError(await runPlugin(["create"], { ...network(null), ipam_options: { driver: "none" } }), 'IPAM driver "none"')
    isError(await runPlugin(["create"], { ...network(null), subnets: [{ subnet: "10.1.2.3/24" }] }), "subnets[0]")
    isError(await runPlugin(["create"], { ...network(null), id: null }), '"id": Expected string')
  })
})

import { joinMember, leaveMember, LocalApi } from "@containerscale/core/member"
import {
  execPlugin,
  netnsPath,
  netnsScope,
  processesWith,
  startTestnet,
  type Testnet
} from "@containerscale/testing"
import { distBin, repoRoot, testingBin } from "@containerscale/sandbox"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { execFile, execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"

/**
 * containerscalectl as users run it: compiled with Bun into a temp dir, every path pointed at temp
 * dirs, and (for status and doctor against live attachments) run inside a throwaway namespace that
 * stands for the node.
 */

const execFileAsync = promisify(execFile)
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-cli-"))
const CTL = path.join(dir, "containerscalectl")
const scope = netnsScope()
let testnet: Testnet | undefined

beforeAll(() => {
  execFileSync("bun", [
    "build", "src/cli/main.ts", "--compile", "--minify", "--bytecode", "--format=esm", "--sourcemap=none", "--conditions=source",
    "--no-compile-autoload-dotenv", "--no-compile-autoload-bunfig", "--outfile", CTL
  ], { cwd: path.join(repoRoot(), "packages", "agent"), stdio: "pipe" })
}, 120_000)

/** Our stand-in daemons (their sockets are under this file's temp dir). */
const daemons = () => processesWith(`--socket=${dir}`)

afterAll(async () => {
  for (const pid of daemons()) process.kill(Number(pid), "SIGKILL")
  await testnet?.close()
  scope.dispose()
  fs.rmSync(dir, { recursive: true, force: true })
})

interface Setup {
  readonly root: string
  readonly bin: string
  readonly conf: string
  readonly state: string
  readonly socket: string
}

let setups = 0
const setup = (): Setup => {
  const root = path.join(dir, `s${setups++}`)
  fs.mkdirSync(root)
  return { root, bin: path.join(root, "bin"), conf: path.join(root, "net.d"), state: path.join(root, "state"), socket: path.join(root, "none.sock") }
}

const flags = (s: Setup) => ["--cni-bin-dir", s.bin, "--cni-conf-dir", s.conf, "--state-dir", s.state, "--tailscaled-socket", s.socket]

interface Run {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

const ctl = async (args: ReadonlyArray<string>, options: { runIn?: string; env?: Record<string, string> } = {}): Promise<Run> => {
  const [file, argv] = options.runIn === undefined ? [CTL, args] : ["ip", ["netns", "exec", options.runIn, CTL, ...args]]
  try {
    const { stdout, stderr } = await execFileAsync(file, [...argv], { env: { ...process.env, ...options.env }, timeout: 30_000 })
    return { code: 0, stdout, stderr }
  } catch (e: any) {
    if (typeof e.code !== "number") throw e
    return { code: e.code, stdout: e.stdout, stderr: e.stderr }
  }
}

const actions = (r: Run) => Object.fromEntries((JSON.parse(r.stdout).changes as Array<{ path: string; action: string }>).map((c) => [c.path, c.action]))

const routerArgs = ["--network", "pods", "--subnet", "10.238.0.0/24"]

describe("containerscalectl install and uninstall", () => {
  it("installs binaries, state dir and conflist; the same inputs again change nothing", async () => {
    const s = setup()
    const conflist = path.join(s.conf, "containerscale-pods.conflist")
    const first = await ctl([...flags(s), "--json", "install", "--from", distBin(), ...routerArgs])
    assert.strictEqual(first.code, 0, first.stderr)
    assert.deepStrictEqual(actions(first), {
      [path.join(s.bin, "containerscale")]: "installed",
      [path.join(s.bin, "containerscale-ipam")]: "installed",
      [s.state]: "created",
      [conflist]: "installed"
    })
    const executable = path.join(s.bin, "containerscale")
    assert.strictEqual(fs.statSync(executable).mode & 0o777, 0o755)
    assert.isTrue(fs.readFileSync(executable).equals(fs.readFileSync(path.join(distBin(), "containerscale"))))
    assert.strictEqual(fs.readlinkSync(path.join(s.bin, "containerscale-ipam")), "containerscale", "the IPAM plugin is a link to the one executable")
    const version = execFileSync(path.join(s.bin, "containerscale-ipam"), [], { input: "{}", env: { CNI_COMMAND: "VERSION" }, encoding: "utf8" })
    assert.include(JSON.parse(version).supportedVersions, "1.1.0")
    assert.deepStrictEqual(fs.readdirSync(s.bin).sort(), ["containerscale", "containerscale-ipam"], "no temp files left")
    const written = JSON.parse(fs.readFileSync(conflist, "utf8"))
    assert.deepStrictEqual(written, {
      cniVersion: "1.0.0",
      name: "pods",
      containerscale: { managed: true },
      plugins: [{
        type: "containerscale",
        mode: "router",
        ipam: { type: "containerscale-ipam", dataDir: path.join(s.state, "ipam"), ranges: [[{ subnet: "10.238.0.0/24" }]] }
      }]
    })
    const before = fs.statSync(conflist).mtimeMs

    const again = await ctl([...flags(s), "install", "--from", distBin(), ...routerArgs])
    assert.strictEqual(again.code, 0, again.stderr)
    assert.strictEqual(again.stdout.match(/^unchanged /gm)?.length, 4, again.stdout)
    assert.strictEqual(fs.statSync(conflist).mtimeMs, before)

    const changed = await ctl([...flags(s), "--json", "install", "--from", distBin(), "--network", "pods", "--subnet", "10.238.0.0/24", "--mtu", "1400"])
    assert.strictEqual(actions(changed)[conflist], "updated")
    assert.strictEqual(JSON.parse(fs.readFileSync(conflist, "utf8")).plugins[0].mtu, 1400)

    const member = await ctl([
      ...flags(s), "install", "--from", distBin(), "--network", "tn", "--mode", "member", "--subnet", "10.239.0.0/24",
      "--chain-after", "ptp", "--login-server", "https://hs.example.com", "--tags", "web,tag:db"
    ])
    assert.strictEqual(member.code, 0, member.stderr)
    const tn = JSON.parse(fs.readFileSync(path.join(s.conf, "containerscale-tn.conflist"), "utf8"))
    assert.deepStrictEqual(tn.plugins.map((p: any) => p.type), ["ptp", "containerscale"])
    assert.deepStrictEqual(tn.plugins[1], {
      type: "containerscale", mode: "member", loginServer: "https://hs.example.com", tags: ["tag:web", "tag:db"], stateDir: s.state
    })

    const foreign = path.join(s.conf, "10-other.conflist")
    fs.writeFileSync(foreign, JSON.stringify({ cniVersion: "1.0.0", name: "other", plugins: [{ type: "containerscale", mode: "router", ipam: { type: "host-local" } }] }))
    const removed = await ctl([...flags(s), "--json", "uninstall"])
    assert.strictEqual(removed.code, 0, removed.stderr)
    assert.deepStrictEqual(actions(removed), {
      [conflist]: "removed",
      [path.join(s.conf, "containerscale-tn.conflist")]: "removed",
      [path.join(s.bin, "containerscale")]: "removed",
      [path.join(s.bin, "containerscale-ipam")]: "removed"
    })
    assert.deepStrictEqual(fs.readdirSync(s.conf), ["10-other.conflist"], "a conflist we did not write stays")
    assert.isTrue(fs.existsSync(s.state), "the state directory stays")
    const twice = await ctl([...flags(s), "--json", "uninstall"])
    assert.strictEqual(twice.code, 0)
    assert.deepStrictEqual(Object.values(actions(twice)), ["absent", "absent"])
  })

  it("refuses to overwrite a conflist it did not write unless --force", async () => {
    const s = setup()
    fs.mkdirSync(s.conf)
    const conflist = path.join(s.conf, "containerscale-pods.conflist")
    const theirs = JSON.stringify({ cniVersion: "1.0.0", name: "pods", plugins: [{ type: "bridge" }] })
    fs.writeFileSync(conflist, theirs)
    const refused = await ctl([...flags(s), "install", "--from", distBin(), ...routerArgs])
    assert.strictEqual(refused.code, 1)
    assert.include(refused.stderr, "was not written by containerscalectl")
    assert.include(refused.stderr, "--force")
    assert.strictEqual(fs.readFileSync(conflist, "utf8"), theirs)

    const kept = await ctl([...flags(s), "--json", "uninstall", "--network", "pods"])
    assert.strictEqual(kept.code, 0)
    assert.deepStrictEqual(actions(kept), { [conflist]: "kept" })
    assert.strictEqual(fs.readFileSync(conflist, "utf8"), theirs)

    const forced = await ctl([...flags(s), "--json", "install", "--from", distBin(), ...routerArgs, "--force"])
    assert.strictEqual(forced.code, 0, forced.stderr)
    assert.strictEqual(actions(forced)[conflist], "updated")
    assert.deepStrictEqual(JSON.parse(fs.readFileSync(conflist, "utf8")).containerscale, { managed: true })
    const again = await ctl([...flags(s), "--json", "install", "--from", distBin(), ...routerArgs])
    assert.strictEqual(actions(again)[conflist], "unchanged", "ours now: no --force needed")

    const other = path.join(s.conf, "20-pods.conflist")
    fs.writeFileSync(other, theirs)
    const clash = await ctl([...flags(s), "install", "--from", distBin(), "--network", "pods", "--subnet", "10.238.1.0/24"])
    assert.strictEqual(clash.code, 1)
    assert.include(clash.stderr, `${other} already defines network "pods"`)

    const onlyPods = await ctl([...flags(s), "--json", "uninstall", "--network", "pods"])
    assert.deepStrictEqual(actions(onlyPods), { [conflist]: "removed" })
    assert.isTrue(fs.existsSync(path.join(s.bin, "containerscale")), "uninstall --network keeps the binaries")
  })

  it("--log-level debug says on stderr what was read, and keeps --json's stdout clean; without it stderr stays empty", async () => {
    const s = setup()
    const quiet = await ctl([...flags(s), "--json", "status"])
    assert.strictEqual(quiet.code, 0, quiet.stderr)
    assert.strictEqual(quiet.stderr, "")
    const loud = await ctl([...flags(s), "--json", "--log-level", "debug", "status"])
    assert.strictEqual(loud.code, 0, loud.stderr)
    assert.deepStrictEqual(JSON.parse(loud.stdout), JSON.parse(quiet.stdout))
    const lines = loud.stderr.trim().split("\n").map((l) => JSON.parse(l) as { level: string; msg: string; cniConfDir?: string; socket?: string })
    assert.deepStrictEqual(lines.map((l) => [l.level, l.msg]), [["debug", "settings"], ["debug", "networks found"], ["debug", "the node's tailscaled"]])
    assert.strictEqual(lines[0]!.cniConfDir, s.conf)
    assert.strictEqual(lines[2]!.socket, s.socket)
  })

  it("usage errors exit 2, failures exit 1, and every command has --help", async () => {
    const s = setup()
    for (const args of [["bogus"], ["install", "--mode", "bridge"], ["install", "--network", "x"], ["status", "--bogus"], ["gc", "--grace", "soon"]]) {
      const r = await ctl([...flags(s), ...args])
      assert.strictEqual(r.code, 2, `${args.join(" ")}: ${r.stdout}${r.stderr}`)
      assert.notStrictEqual(r.stderr.trim(), "", args.join(" "))
    }
    const router = await ctl([...flags(s), "install", "--network", "x", "--subnet", "10.0.0.0/24", "--tags", "a"])
    assert.strictEqual(router.code, 2)
    assert.include(router.stderr, "--mode member")
    // a subnet that only looks like a CIDR is refused before anything is written, and an installed conflist stays
    const installed = await ctl([...flags(s), "install", "--from", distBin(), ...routerArgs])
    assert.strictEqual(installed.code, 0, installed.stderr)
    const before = fs.readdirSync(s.conf).map((f) => fs.readFileSync(path.join(s.conf, f), "utf8"))
    for (const subnet of ["10.244.1.0/33", "10.244.1.5/24", "999.1.1.0/24"]) {
      const bad = await ctl([...flags(s), "install", "--from", distBin(), "--network", "pods", "--subnet", subnet, "--force"])
      assert.strictEqual(bad.code, 2, `${subnet}: ${bad.stdout}${bad.stderr}`)
      assert.include(bad.stderr, subnet)
      assert.deepStrictEqual(fs.readdirSync(s.conf).map((f) => fs.readFileSync(path.join(s.conf, f), "utf8")), before, subnet)
    }
    fs.rmSync(s.bin, { recursive: true, force: true })
    const missing = await ctl([...flags(s), "install", "--from", path.join(s.root, "nowhere")])
    assert.strictEqual(missing.code, 1)
    assert.include(missing.stderr, "containerscale is missing")
    assert.isFalse(fs.existsSync(s.bin), "nothing written")

    const top = await ctl(["--help"])
    assert.strictEqual(top.code, 0)
    for (const word of ["status", "doctor", "install", "uninstall", "gc", "--state-dir", "--cni-conf-dir", "--cni-bin-dir", "--tailscaled-socket", "--json"]) {
      assert.include(top.stdout, word)
    }
    const expected: Record<string, Array<string>> = {
      status: [],
      doctor: [],
      install: ["--from", "--network", "--mode", "--subnet", "--login-server", "--tags", "--chain-after", "--mtu", "--force"],
      uninstall: ["--network"],
      gc: ["--dry-run", "--grace"]
    }
    for (const [command, words] of Object.entries(expected)) {
      const help = await ctl([command, "--help"])
      assert.strictEqual(help.code, 0, command)
      assert.include(help.stdout, `containerscalectl ${command}`)
      for (const word of [...words, "--state-dir"]) assert.include(help.stdout, word, `${command} --help`)
    }
  })
})

describe("containerscalectl on a node", () => {
  const node = scope.create("node")
  const SUBNET = "10.238.7.0/24"

  it("doctor fails on a broken setup, then passes; status shows allocations and members; gc collects", async () => {
    const s = setup()
    fs.mkdirSync(s.conf, { recursive: true })
    fs.writeFileSync(path.join(s.conf, "10-broken.conflist"), JSON.stringify({
      cniVersion: "1.0.0",
      name: "broken",
      plugins: [{ type: "containerscale", mode: "router", ipam: { type: "containerscale-ipam" } }, { type: "containerscale-ipm" }]
    }))
    const env = { PATH: `${testingBin()}:${process.env["PATH"]}` }
    const bad = await ctl([...flags(s), "doctor"], { runIn: node, env })
    assert.strictEqual(bad.code, 1, bad.stdout + bad.stderr)
    for (const line of ["FAIL  plugin containerscale:", "FAIL  network broken:", "FAIL  node tailscaled:", "FAIL  state directory:", "FAIL  net.ipv4.ip_forward:"]) {
      assert.include(bad.stdout, line)
    }
    assert.include(bad.stdout, `"containerscale-ipm"`)
    assert.include(bad.stdout, "fix: containerscalectl install")
    const badJson = JSON.parse((await ctl([...flags(s), "--json", "doctor"], { runIn: node, env })).stdout)
    assert.isFalse(badJson.ok)
    assert.includeDeepMembers(badJson.checks.map((c: any) => [c.name, c.status]), [["ip in PATH", "OK"], ["plugin containerscale", "FAIL"]])

    // repair: our binaries and conflist, a Running tailscaled, attachments
    fs.rmSync(path.join(s.conf, "10-broken.conflist"))
    const installed = await ctl([...flags(s), "install", "--from", distBin(), "--network", "pods", "--subnet", SUBNET])
    assert.strictEqual(installed.code, 0, installed.stderr)
    const conf = JSON.parse(fs.readFileSync(path.join(s.conf, "containerscale-pods.conflist"), "utf8"))
    const plugin = { ...conf.plugins[0], cniVersion: conf.cniVersion, name: conf.name }
    const ips: Record<string, string> = {}
    for (const id of ["web", "db"]) {
      const ctr = scope.create(id)
      const out = await execPlugin(path.join(s.bin, "containerscale"), { command: "ADD", containerId: id, netns: netnsPath(ctr), ifname: "eth0", runIn: node }, plugin)
      assert.strictEqual(out.exitCode, 0, out.stdout)
      ips[id] = (out.json as any).ips[0].address.split("/")[0]
    }

    testnet = await startTestnet({ stateDir: path.join(dir, "testnet") })
    const key = Redacted.make(await testnet.createAuthKey({ reusable: true, ephemeral: true }))
    const memberNs = scope.create("member")
    const member = await Effect.runPromise(Effect.provide(joinMember({
      stateDir: path.join(s.state, "member"),
      network: "tailnet",
      containerId: "m1",
      ifname: "eth0",
      netns: netnsPath(memberNs),
      identity: "m1",
      persistent: false,
      tailscaled: path.join(testingBin(), "tailscaled"),
      userspace: true,
      prefs: { hostname: "m1", loginServer: testnet.loginServer, advertiseRoutes: [SUBNET] },
      authKey: key,
      timeout: "20 seconds"
    }), LocalApi.layer))
    // the member's daemon stands in for the node's own tailscaled too
    const nodeFlags = [...flags(s).slice(0, -1), member.socket]

    const good = await ctl([...nodeFlags, "doctor"], { runIn: node, env })
    assert.strictEqual(good.code, 0, good.stdout + good.stderr)
    assert.notInclude(good.stdout, "FAIL")
    assert.include(good.stdout, "OK    node tailscaled:")
    assert.include(good.stdout, "all checks passed")

    const json = await ctl([...nodeFlags, "--json", "status"], { runIn: node })
    assert.strictEqual(json.code, 0, json.stderr)
    const status = JSON.parse(json.stdout)
    assert.strictEqual(status.networks.length, 1)
    const pods = status.networks[0]
    assert.deepInclude(pods, { name: "pods", mode: "router", managed: true })
    assert.deepStrictEqual(pods.pool, [{ family: 4, ranges: ["10.238.7.1-10.238.7.254"], size: "253", used: 2, utilisation: 0.8 }])
    assert.sameDeepMembers(pods.allocations.map((a: any) => [a.containerId, a.ip, a.hostInterfacePresent]), [["web", ips["web"], true], ["db", ips["db"], true]])
    assert.strictEqual(status.members.length, 1)
    assert.deepInclude(status.members[0], { identity: "m1", containerId: "m1", running: true, backendState: "Running", netnsPresent: true })
    assert.deepStrictEqual(status.members[0].addresses, [...member.addresses])
    assert.deepInclude(status.tailscaled, { reachable: true, backendState: "Running", advertisedRoutes: [SUBNET] })

    const text = await ctl([...nodeFlags, "status"], { runIn: node })
    assert.strictEqual(text.code, 0, text.stderr)
    assert.match(text.stdout, /NETWORK +MODE +POOL +USED +SIZE +UTIL +FILE/)
    assert.match(text.stdout, /pods +router +10\.238\.7\.1-10\.238\.7\.254 +2 +253 +0\.8%/)
    assert.include(text.stdout, ips["web"]!)
    assert.include(text.stdout, member.addresses[0]!)
    assert.include(text.stdout, SUBNET)

    // the env variable names the state dir
    const viaEnv = JSON.parse((await ctl(["--cni-conf-dir", s.conf, "--tailscaled-socket", s.socket, "--json", "status"], { runIn: node, env: { CONTAINERSCALE_STATE_DIR: s.state } })).stdout)
    assert.strictEqual(viaEnv.stateDir, s.state)
    assert.strictEqual(viaEnv.members.length, 1)

    // containers die without DEL: gc collects them
    execFileSync("ip", ["netns", "delete", `${scope.prefix}web`])
    execFileSync("ip", ["netns", "delete", memberNs])
    const dry = await ctl([...nodeFlags, "gc", "--dry-run", "--grace", "50"], { runIn: node })
    assert.strictEqual(dry.code, 0, dry.stderr)
    assert.include(dry.stdout, `would release ${ips["web"]} of web (eth0) in pods`)
    assert.include(dry.stdout, "would take member m1 (m1) of tailnet off the tailnet")
    const gc = await ctl([...nodeFlags, "--json", "gc", "--grace", "50"], { runIn: node })
    assert.strictEqual(gc.code, 0, gc.stdout + gc.stderr)
    const report = JSON.parse(gc.stdout)
    assert.deepStrictEqual(report.addresses.map((a: any) => [a.containerId, a.ips]), [["web", [ips["web"]]]])
    assert.deepStrictEqual(report.members.map((m: any) => m.identity), ["m1"])
    const after = JSON.parse((await ctl([...flags(s), "--json", "status"], { runIn: node })).stdout)
    assert.deepStrictEqual(after.networks[0].allocations.map((a: any) => a.containerId), ["db"])
    assert.deepStrictEqual(after.members, [])
    assert.strictEqual((await ctl([...flags(s), "gc", "--grace", "50"], { runIn: node })).stdout.trim(), "nothing to collect")

    await execPlugin(path.join(s.bin, "containerscale"), { command: "DEL", containerId: "db", netns: "", ifname: "eth0", runIn: node }, plugin)
    await Effect.runPromise(Effect.provide(leaveMember({ stateDir: path.join(s.state, "member"), identity: "m1", keepState: false }), LocalApi.layer))
  })
})

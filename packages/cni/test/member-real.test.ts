import {
  type HeadscaleNodeJson,
  type HeadscaleUserJson,
  type RealAuthKeyOptions,
  type RealTailnet,
  startRealTailnet,
  type TailnetHost,
  cniPath,
  distBin
} from "@containerscale/sandbox"
import { execPlugin, netnsPath, processesWith, runConflist, waitUntil, writableFor } from "@containerscale/testing"
import { afterAll, afterEach, assert, beforeAll, describe, it } from "@effect/vitest"
import { execFile, execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"

/**
 * Member mode through the `containerscale` CNI binary against the real daemons: tailscaled
 * 1.102 in each container namespace, Headscale 0.29 and DERP in the fixture's hub. The node is a
 * host namespace on the hub bridge (the hub routes the bridge subnet to it); the chain is the
 * reference bridge, run inside the node, then containerscale.
 */

const execFileAsync = promisify(execFile)
const SUBNET = "10.236.40.0/24"
const NETWORK = "members"
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-member-real-"))
fs.chmodSync(dir, 0o700)
let tailnet: RealTailnet
let node: TailnetHost
let user: HeadscaleUserJson
let taggedKey = ""
const seenKeys: Array<string> = []

const daemons = (stateDir = dir) => processesWith(`--socket=${stateDir}/`)

const killDaemons = () => {
  for (const pid of daemons()) {
    try {
      process.kill(pid, "SIGKILL")
    } catch {
      // already gone
    }
  }
}

/** Every process whose command line holds one of the keys handed out: there must never be one. */
const keysOnCommandLines = () => {
  const hits: Array<string> = []
  for (const pid of fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8")
      if (seenKeys.some((k) => cmdline.includes(k))) hits.push(`${pid}: ${cmdline.replaceAll("\0", " ")}`)
    } catch {
      // gone
    }
  }
  return hits
}
let cmdlineWatch: NodeJS.Timeout | undefined
const cmdlineHits: Array<string> = []

const newKey = async (options: Omit<RealAuthKeyOptions, "user"> & { readonly user?: HeadscaleUserJson }) => {
  const created = await tailnet.createAuthKey({ user, ...options })
  seenKeys.push(created.key)
  return created
}

beforeAll(async () => {
  tailnet = await startRealTailnet()
  node = tailnet.addHost("node", { routedSubnets: [SUBNET] })
  user = await tailnet.createUser("ci")
  taggedKey = (await newKey({ reusable: true, ephemeral: true, tags: ["tag:ci"] })).key
  cmdlineWatch = setInterval(() => cmdlineHits.push(...keysOnCommandLines()), 25)
}, 900_000)

/** After each test, also a failed one: no daemon and no node is left for the next. */
afterEach(async () => {
  killDaemons()
  for (const n of (await tailnet?.nodes()) ?? []) await tailnet.headscale(["nodes", "delete", "--identifier", String(n.id), "--force"])
}, 60_000)

afterAll(async () => {
  clearInterval(cmdlineWatch)
  killDaemons()
  await tailnet?.close()
  fs.rmSync(dir, { recursive: true, force: true })
}, 120_000)

interface Net {
  readonly stateDir: string
  /** the member folders */
  readonly members: string
  readonly list: (extra?: Record<string, unknown>) => {
    readonly cniVersion: string
    readonly name: string
    readonly plugins: ReadonlyArray<{ readonly type: string } & Record<string, unknown>>
  }
}

/** A bridge + containerscale conflist with a state directory of its own (one per test); one bridge for all. */
const network = (name: string): Net => {
  const stateDir = path.join(dir, name)
  return {
    stateDir,
    members: path.join(stateDir, "member"),
    list: (extra = {}) => ({
      cniVersion: "1.0.0",
      name: NETWORK,
      plugins: [
        {
          type: "bridge", bridge: "csm0", isGateway: true, ipMasq: false,
          ipam: {
            type: "host-local", dataDir: path.join(dir, "host-local"),
            ranges: [[{ subnet: SUBNET }]], routes: [{ dst: "0.0.0.0/0" }]
          }
        },
        {
          type: "containerscale",
          loginServer: tailnet.loginServer,
          tailscaledPath: tailnet.runtime.tailscaled,
          stateDir,
          timeoutSeconds: 60,
          ...extra
        }
      ]
    })
  }
}

const options = (containerId: string, ctr: string, args: Record<string, string> = {}, env: Record<string, string> = {}) => ({
  containerId,
  netns: netnsPath(ctr),
  ifname: "eth0",
  path: cniPath(),
  runIn: node.netns,
  cacheDir: path.join(dir, "cache"),
  args: { IgnoreUnknown: "1", ...args },
  env: { CONTAINERSCALE_AUTH_KEY: taggedKey, ...env },
  timeoutMs: 180_000
})

const inNetns = (ns: string, argv: ReadonlyArray<string>) =>
  execFileAsync("ip", ["netns", "exec", ns, ...argv], { timeout: 30_000 })

/** Retried: a peer that joined a moment ago reaches the others' netmaps a little later. */
const ping = (from: string, to: string) =>
  waitUntil(`ping ${to} from ${from}`, () => inNetns(from, ["busybox", "ping", ...(to.includes(":") ? ["-6"] : []), "-c", "1", "-W", "2", to]), 30_000)

const resolve = (from: string, name: string) =>
  waitUntil(`resolve ${name} in ${from}`, async () => (await inNetns(from, ["busybox", "nslookup", name, "100.100.100.100"])).stdout, 30_000)

interface AddResult {
  readonly interfaces: ReadonlyArray<{ readonly name: string; readonly sandbox?: string; readonly mac?: string }>
  readonly ips: ReadonlyArray<{ readonly address: string; readonly interface?: number }>
  readonly dns?: { readonly nameservers?: ReadonlyArray<string>; readonly search?: ReadonlyArray<string> }
}

const tailnetIps = (result: AddResult) =>
  result.ips.map((ip) => ip.address.split("/")[0]!).filter((a) => a.startsWith("100.") || a.startsWith("fd7a:"))
const ipv4 = (result: AddResult) => tailnetIps(result).find((a) => a.startsWith("100."))!
const ipv6 = (result: AddResult) => tailnetIps(result).find((a) => a.startsWith("fd7a:"))!

const nodeNamed = async (name: string): Promise<HeadscaleNodeJson | undefined> =>
  (await tailnet.nodes()).find((n) => (n.given_name ?? n.name) === name)

const tailscaledOf = (net: Net, identity: string) => {
  const pid = Number(fs.readFileSync(path.join(net.members, identity, "tailscaled.pid"), "utf8").trim())
  assert.isTrue(Number.isInteger(pid) && pid > 0, `pid of ${identity}`)
  return pid
}

const add = async (net: Net, id: string, ctr: string, extra: Record<string, unknown> = {}, args: Record<string, string> = {}, env: Record<string, string> = {}) => {
  const out = await runConflist(net.list(extra), "ADD", options(id, ctr, args, env))
  assert.isTrue(out.ok, `ADD ${id}: ${JSON.stringify(out.error)}`)
  return out.result as AddResult
}

const del = async (net: Net, id: string, ctr: string, extra: Record<string, unknown> = {}) => {
  const out = await runConflist(net.list(extra), "DEL", options(id, ctr))
  assert.isTrue(out.ok, `DEL ${id}: ${JSON.stringify(out.error)}`)
}

const folders = (net: Net) => (fs.existsSync(net.members) ? fs.readdirSync(net.members).sort() : [])

const run = (file: string, args: ReadonlyArray<string>) => {
  try {
    return execFileSync(file, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })
  } catch (e) {
    return `failed: ${(e as Error).message}`
  }
}

const hasCommand = (name: string) => ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].some((d) => fs.existsSync(path.join(d, name)))

/** Every file and folder under `root` with its type, size, mode and mtime; empty when `root` is missing. */
const listing = (root: string): Array<string> => {
  const out: Array<string> = []
  const walk = (p: string) => {
    let st: fs.Stats
    try {
      st = fs.lstatSync(p)
    } catch {
      return
    }
    out.push(`${p} ${st.isDirectory() ? "d" : st.isSymbolicLink() ? "l" : "f"} ${st.size} ${st.mode.toString(8)} ${st.mtimeMs}`)
    if (st.isDirectory()) for (const name of fs.readdirSync(p).sort()) walk(path.join(p, name))
  }
  walk(root)
  return out
}

/** Where a tailscaled keeps things when not told otherwise, and where its DNS and log code write. */
const DEFAULT_PATHS = ["/var/lib/tailscale", "/var/run/tailscale", "/run/tailscale", "/var/cache/tailscale", "/etc", "/root/.cache/tailscale", "/root/.local/share/tailscale", "/root/.config/tailscale"]

/** What member mode must leave as it is in the host namespace: rules, routes, DNS, default paths, mounts. */
const hostState = () => ({
  resolvConf: fs.readFileSync("/etc/resolv.conf").toString("base64"),
  iptables: run("iptables-save", []).replace(/^#.*\n/gm, ""),
  ip6tables: run("ip6tables-save", []).replace(/^#.*\n/gm, ""),
  nft: hasCommand("nft") ? run("nft", ["list", "ruleset"]) : "no nft",
  rules4: run("ip", ["-4", "rule"]),
  rules6: run("ip", ["-6", "rule"]),
  routes4: run("ip", ["-4", "route", "show", "table", "all"]),
  routes6: run("ip", ["-6", "route", "show", "table", "all"]),
  // the Docker driver tests that run beside this file write their plugin spec files there
  paths: DEFAULT_PATHS.flatMap(listing).filter((l) => !l.startsWith("/etc/docker/plugins")),
  mounts: fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter((l) => l.includes(dir) || /overlay.*containerscale|containerscale.*overlay/.test(l))
})

const environOf = (pid: number) => fs.readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").filter((v) => v !== "")

describe("member mode against real tailscaled and Headscale", { timeout: 400_000 }, () => {
  it("two containers join with the key's tags, reach each other over WireGuard and by MagicDNS, and leave on DEL", async () => {
    const net = network("pair")
    const [a, b] = [tailnet.scope.create("a"), tailnet.scope.create("b")]
    const ra = await add(net, "ma", a, { tags: ["ci"] }, { K8S_POD_NAME: "web" })
    const rb = await add(net, "mb", b, { tags: ["ci"] }, { K8S_POD_NAME: "db" })

    const tun = ra.interfaces.at(-1)!
    assert.strictEqual(tun.name, "tailscale0")
    assert.strictEqual(tun.sandbox, netnsPath(a))
    const onTun = ra.ips.filter((ip) => ip.interface === ra.interfaces.length - 1).map((ip) => ip.address)
    assert.strictEqual(onTun.length, 2)
    assert.match(onTun[0]!, /^100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.\d+\.\d+\/32$/)
    assert.match(onTun[1]!, /^fd7a:115c:a1e0:[0-9a-f:]+\/128$/)
    assert.deepStrictEqual(ra.dns?.nameservers, ["100.100.100.100"])
    assert.deepStrictEqual(ra.dns?.search, [tailnet.baseDomain])

    const [web, db] = [await nodeNamed("web"), await nodeNamed("db")]
    assert.isDefined(web)
    assert.isDefined(db)
    assert.deepStrictEqual([...web!.ip_addresses!].sort(), tailnetIps(ra).sort())
    assert.deepStrictEqual([...db!.ip_addresses!].sort(), tailnetIps(rb).sort())
    assert.deepStrictEqual(web!.tags, ["tag:ci"])
    assert.deepStrictEqual(db!.tags, ["tag:ci"])
    assert.isTrue(web!.online && db!.online)

    await ping(a, ipv4(rb))
    await ping(b, ipv4(ra))
    await ping(a, ipv6(rb))
    assert.include(await resolve(a, `db.${tailnet.baseDomain}`), ipv4(rb))
    assert.include(await resolve(b, `web.${tailnet.baseDomain}`), ipv4(ra))

    const check = await runConflist({ ...net.list(), plugins: net.list().plugins.slice(1) }, "CHECK", { ...options("ma", a), prevResult: ra })
    assert.isTrue(check.ok, JSON.stringify(check.error))

    await del(net, "ma", a)
    assert.isUndefined(await nodeNamed("web"), "an ephemeral node is gone from Headscale as soon as DEL returns")
    await del(net, "mb", b)
    assert.deepStrictEqual(await tailnet.nodes(), [])
    assert.deepStrictEqual(daemons(net.stateDir), [])
    assert.deepStrictEqual(folders(net), [])
  })

  it("a persistent identity comes back after DEL and ADD as the same node with the same addresses, with the spent key or none", async () => {
    const net = network("persist")
    const key = await newKey({ reusable: false, ephemeral: false })
    const ctr = tailnet.scope.create("p1")
    const workload = { K8S_POD_NAMESPACE: "shop", K8S_POD_NAME: "cart" }
    const env = { CONTAINERSCALE_AUTH_KEY: key.key }
    const first = await add(net, "p1", ctr, { ephemeral: false }, workload, env)
    const before = await nodeNamed("cart")
    assert.isDefined(before)
    await del(net, "p1", ctr, { ephemeral: false })
    assert.deepStrictEqual(daemons(net.stateDir), [])
    assert.deepStrictEqual(folders(net), [`${NETWORK}_shop_cart`], "the state of a persistent identity stays")
    assert.strictEqual((await nodeNamed("cart"))?.id, before!.id, "the node stays in Headscale")

    const again = tailnet.scope.create("p2")
    const second = await add(net, "p2", again, { ephemeral: false }, workload, env)
    const after = await nodeNamed("cart")
    assert.strictEqual(after?.id, before!.id)
    assert.deepStrictEqual(tailnetIps(second).sort(), tailnetIps(first).sort())
    assert.deepStrictEqual([...after!.ip_addresses!].sort(), tailnetIps(first).sort())
    assert.strictEqual((await tailnet.nodes()).filter((n) => (n.given_name ?? n.name) === "cart").length, 1)
    await waitUntil("the node online again", async () => ((await nodeNamed("cart"))?.online === true ? true : undefined), 30_000)
    await del(net, "p2", again, { ephemeral: false })

    const third = tailnet.scope.create("p3")
    const noKey = await add(net, "p3", third, { ephemeral: false }, workload, { CONTAINERSCALE_AUTH_KEY: "" })
    assert.deepStrictEqual(tailnetIps(noKey).sort(), tailnetIps(first).sort())
    assert.strictEqual((await nodeNamed("cart"))?.id, before!.id)
    await del(net, "p3", third, { ephemeral: false })
    assert.deepStrictEqual(daemons(net.stateDir), [])
  })

  it("userspace networking: no TUN device, and the node is reachable over the tailnet", async () => {
    const net = network("userspace")
    const [u, t] = [tailnet.scope.create("u"), tailnet.scope.create("t")]
    const ru = await add(net, "mu", u, { userspace: true }, { K8S_POD_NAME: "netstack" })
    const rt = await add(net, "mt", t, {}, { K8S_POD_NAME: "kernel" })
    assert.isFalse(ru.interfaces.some((i) => i.name === "tailscale0"))
    assert.strictEqual(tailnetIps(ru).length, 2)
    assert.isTrue(ru.ips.filter((ip) => tailnetIps(ru).includes(ip.address.split("/")[0]!)).every((ip) => ip.interface === undefined))
    const links = JSON.parse((await inNetns(u, ["ip", "-json", "link"])).stdout) as Array<{ ifname: string }>
    assert.deepStrictEqual(links.map((l) => l.ifname).sort(), ["eth0", "lo"])
    await ping(t, ipv4(ru))
    assert.include(await resolve(t, `netstack.${tailnet.baseDomain}`), ipv4(ru))
    await del(net, "mu", u)
    await del(net, "mt", t)
    assert.deepStrictEqual(await tailnet.nodes(), [])
    assert.deepStrictEqual(daemons(net.stateDir), [])
  })

  it("faults with the real daemons give a clear CNI error within the timeout and leave nothing behind", async () => {
    const net = network("faults")
    const TIMEOUT = 15
    const expired = await newKey({ reusable: true })
    await tailnet.expireAuthKey(expired, user)
    const gone = await tailnet.createUser("gone")
    const orphan = await newKey({ user: gone, reusable: true })
    await tailnet.headscale(["users", "destroy", "--identifier", gone.id, "--force"])
    const single = await newKey({ reusable: false, ephemeral: true })
    const once = tailnet.scope.create("once")
    await add(net, "once", once, {}, { K8S_POD_NAME: "once" }, { CONTAINERSCALE_AUTH_KEY: single.key })
    await del(net, "once", once)

    const cases: ReadonlyArray<{ what: string; extra?: Record<string, unknown>; key: string; says: ReadonlyArray<string> }> = [
      { what: "expired key", key: expired.key, says: ["refused", "authkey expired", "create a new auth key", "CONTAINERSCALE_AUTH_KEY"] },
      { what: "key of a deleted user", key: orphan.key, says: ["refused", "invalid pre auth key", "does not know this auth key", "create a new auth key"] },
      { what: "used single-use key", key: single.key, says: ["refused", "authkey already used", "single-use", "reusable"] },
      {
        what: "unreachable Headscale",
        key: taggedKey,
        extra: { loginServer: `http://${tailnet.hubAddress}:9` },
        says: [`within ${TIMEOUT}s`, `login server http://${tailnet.hubAddress}:9`, "connection refused", "loginServer", "timeoutSeconds"]
      },
      { what: "missing tailscaled", key: taggedKey, extra: { tailscaledPath: "/nonexistent/tailscaled" }, says: ["/nonexistent/tailscaled", "tailscaledPath"] },
      { what: "tags the key does not carry", key: taggedKey, extra: { tags: ["tag:other"] }, says: ["[tag:ci]", "tag:other", "--tags tag:other"] }
    ]
    for (const c of cases) {
      const ctr = tailnet.scope.create("bad")
      const started = Date.now()
      const out = await runConflist(net.list({ timeoutSeconds: TIMEOUT, ...c.extra }), "ADD", options("bad", ctr, { K8S_POD_NAME: "bad" }, { CONTAINERSCALE_AUTH_KEY: c.key }))
      const took = Date.now() - started
      assert.isFalse(out.ok, c.what)
      const error = out.error as { code: number; msg: string }
      assert.strictEqual(error.code, 107, `${c.what}: ${JSON.stringify(error)}`)
      for (const text of c.says) assert.include(error.msg, text, c.what)
      for (const k of seenKeys) assert.notInclude(JSON.stringify(out), k, c.what)
      assert.isBelow(took, (TIMEOUT + 10) * 1000, `${c.what} took ${took} ms`)
      assert.deepStrictEqual(daemons(net.stateDir), [], c.what)
      assert.deepStrictEqual(folders(net), [], c.what)
      assert.isUndefined(await nodeNamed("bad"), c.what)
      // the runtime's DEL after a failed ADD frees the bridge's address
      const cleanup = await runConflist(net.list({ timeoutSeconds: TIMEOUT, ...c.extra }), "DEL", options("bad", ctr))
      assert.isTrue(cleanup.ok, `DEL after ${c.what}: ${JSON.stringify(cleanup.error)}`)
      execFileSync("ip", ["netns", "delete", ctr])
    }

    const status = (extra: Record<string, unknown>) =>
      execPlugin(path.join(distBin(), "containerscale"), { command: "STATUS", runIn: node.netns }, { ...net.list(extra).plugins[1], cniVersion: "1.1.0", name: NETWORK })
    const ready = await status({})
    assert.strictEqual(ready.exitCode, 0, ready.stdout)
    const notReady = await status({ tailscaledPath: "/nonexistent/tailscaled" })
    assert.strictEqual((notReady.json as { code: number }).code, 50)
    assert.include((notReady.json as { msg: string }).msg, "/nonexistent/tailscaled")
  })

  it("leaves the host as it was, with acceptDns false and true and in userspace, and never shows the key", async () => {
    const net = network("host")
    const variants = [
      { what: "acceptDns false", extra: { acceptDns: false }, privateDns: false },
      { what: "acceptDns true", extra: { acceptDns: true }, privateDns: true },
      { what: "userspace", extra: { userspace: true, acceptDns: true }, privateDns: false }
    ]
    for (const v of variants) {
      const ctr = tailnet.scope.create("host")
      const before = hostState()
      await add(net, "host", ctr, v.extra, { K8S_POD_NAME: "hostcheck" })
      const pid = tailscaledOf(net, `${NETWORK}_hostcheck`)
      const env = environOf(pid)
      for (const k of seenKeys) assert.isFalse(env.some((e) => e.includes(k)), `${v.what}: the key is in the environment of tailscaled`)
      const names = env.map((e) => e.slice(0, e.indexOf("=")))
      const expected = ["DBUS_SYSTEM_BUS_ADDRESS", "HOME", "OLDPWD", "PATH", "PWD", "TS_LOGS_DIR", "TS_NO_LOGS_NO_SUPPORT"]
      assert.deepStrictEqual(names.filter((n) => !expected.includes(n)), [], `${v.what}: the plugin's environment reached tailscaled`)
      assert.include(env, `TS_LOGS_DIR=${path.join(net.members, `${NETWORK}_hostcheck`, "logs")}`)
      const privateResolv = fs.readFileSync(`/proc/${pid}/root/etc/resolv.conf`, "utf8")
      if (v.privateDns) assert.include(privateResolv, "nameserver 100.100.100.100", `${v.what}: the daemon's own view of resolv.conf`)
      else assert.notInclude(privateResolv, "100.100.100.100", v.what)
      assert.isFalse(fs.existsSync(`/proc/${pid}/root/run/netns`), `${v.what}: the node's /run (its systemd, its sockets) is hidden`)
      const folder = path.join(net.members, `${NETWORK}_hostcheck`)
      assert.deepStrictEqual(writableFor(pid, ["/", "/var/lib", "/root", dir, net.members, folder]), [folder], `${v.what}: only its own folder is writable`)
      assert.deepStrictEqual(hostState(), before, `${v.what}: while the member runs`)
      const log = fs.readFileSync(path.join(net.members, `${NETWORK}_hostcheck`, "tailscaled.log"), "utf8")
      assert.include(log, "Running", `${v.what}: the daemon's log`)
      for (const k of seenKeys) assert.notInclude(log, k, `${v.what}: the key is in the daemon's log`)
      await del(net, "host", ctr, v.extra)
      assert.deepStrictEqual(daemons(net.stateDir), [], v.what)
      assert.deepStrictEqual(hostState(), before, `${v.what}: after DEL`)
      execFileSync("ip", ["netns", "delete", ctr])
    }
    assert.deepStrictEqual(cmdlineHits, [], "a command line held an auth key")
  })
})

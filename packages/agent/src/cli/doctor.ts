import { DAMAGE_FILE, inspectStore } from "@containerscale/core"
import { LocalApi } from "@containerscale/core/member"
import { Effect, Result } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { type GlobalOptions } from "./globals.ts"
import {
  ipamDataDir,
  mentionsUs,
  type NetworkFile,
  type OurNetwork,
  ourNetwork,
  PLUGIN_BINARIES,
  pluginMode,
  poolOfSection,
  readConfDir
} from "./networks.ts"

/** `doctor`: each check with OK, WARN or FAIL and, when not OK, how to fix it. */

export type CheckStatus = "OK" | "WARN" | "FAIL"

export interface Check {
  readonly name: string
  readonly status: CheckStatus
  readonly detail: string
  readonly fix?: string | undefined
}

const ok = (name: string, detail: string): Check => ({ name, status: "OK", detail })
const fail = (name: string, detail: string, fix: string): Check => ({ name, status: "FAIL", detail, fix })
const warn = (name: string, detail: string, fix: string): Check => ({ name, status: "WARN", detail, fix })

const isExecutableFile = (file: string) => {
  try {
    const st = fs.statSync(file)
    if (!st.isFile()) return false
    fs.accessSync(file, fs.constants.X_OK)
    return (st.mode & 0o111) !== 0
  } catch {
    return false
  }
}

const inPath = (tool: string): string | undefined => {
  if (tool.includes("/")) return isExecutableFile(tool) ? tool : undefined
  for (const dir of (process.env["PATH"] ?? "").split(":").filter((d) => d !== "")) {
    const candidate = path.join(dir, tool)
    if (isExecutableFile(candidate)) return candidate
  }
  return undefined
}

const KNOWN_TYPES = new Set<string>(PLUGIN_BINARIES)

/** What is wrong with one of our network files; empty when nothing is. */
export const conflistProblems = (n: NetworkFile, binDir: string): Array<string> => {
  if (n.error !== undefined) return [n.error]
  const problems: Array<string> = []
  const seen = new Set<string>()
  n.plugins.forEach((p, i) => {
    if (p.type.startsWith("containerscale") && !KNOWN_TYPES.has(p.type)) {
      problems.push(`plugin ${i + 1} has type "${p.type}": ours are ${[...KNOWN_TYPES].map((t) => `"${t}"`).join(" and ")}`)
    }
    if (p.type === "containerscale-ipam") problems.push(`"containerscale-ipam" is an IPAM plugin: put it in an "ipam" section, not in "plugins"`)
    if (!seen.has(p.type) && !isExecutableFile(path.join(binDir, p.type))) {
      problems.push(`plugin "${p.type}" is not in ${binDir}`)
    }
    seen.add(p.type)
    const ipam = p["ipam"] as Record<string, unknown> | undefined
    if (ipam?.["type"] === "containerscale-ipam") {
      const pool = poolOfSection(ipam)
      if (Result.isFailure(pool)) problems.push(`the ipam section of "${p.type}": ${pool.failure}`)
      const dataDir = ipam["dataDir"]
      if (dataDir !== undefined && (typeof dataDir !== "string" || !path.isAbsolute(dataDir))) {
        problems.push(`the ipam section of "${p.type}" has "dataDir": ${JSON.stringify(dataDir)}: the plugins refuse it, write an absolute path ` +
          `(a relative one names another store in each working directory)`)
      }
    }
    if (p.type === "containerscale") {
      if (p["mode"] !== undefined && p["mode"] !== "router" && p["mode"] !== "member") {
        problems.push(`"mode" must be "router" or "member", not ${JSON.stringify(p["mode"])}`)
      } else if (pluginMode(p) === "router") {
        if (ipam === undefined) problems.push(`router mode needs an "ipam" section, e.g. {"type": "containerscale-ipam", "ranges": [[{"subnet": "10.244.1.0/24"}]]}`)
      } else if (i === 0) {
        problems.push(`member mode is chained after an interface plugin (bridge, ptp, or ours in router mode), but it is the first plugin`)
      }
    }
  })
  return problems
}

const readSysctl = (key: string): string | undefined => {
  try {
    return fs.readFileSync(path.join("/proc/sys", ...key.split(".")), "utf8").trim()
  } catch {
    return undefined
  }
}

export const runDoctor = Effect.fnUntraced(function*(g: GlobalOptions) {
  const checks: Array<Check> = []

  for (const name of PLUGIN_BINARIES) {
    const file = path.join(g.cniBinDir, name)
    if (isExecutableFile(file)) checks.push(ok(`plugin ${name}`, file))
    else {
      checks.push(fail(
        `plugin ${name}`,
        fs.existsSync(file) ? `${file} is not an executable file` : `${file} is missing`,
        fs.existsSync(file) ? `chmod 0755 ${file}` : `containerscalectl install --cni-bin-dir ${g.cniBinDir}`
      ))
    }
  }

  const files = readConfDir(g.cniConfDir)
  if (!fs.existsSync(g.cniConfDir)) {
    checks.push(fail("CNI config directory", `${g.cniConfDir} does not exist`, `containerscalectl install --network NAME ... (or mkdir -p ${g.cniConfDir})`))
  }
  const ours = files.filter(mentionsUs)
  if (fs.existsSync(g.cniConfDir) && ours.length === 0) {
    checks.push(warn("networks", `no network in ${g.cniConfDir} uses containerscale`, `containerscalectl install --network NAME --subnet CIDR`))
  }
  for (const n of ours) {
    const problems = conflistProblems(n, g.cniBinDir)
    const label = `network ${n.name || path.basename(n.file)}`
    checks.push(problems.length === 0
      ? ok(label, `${n.file}: ${n.plugins.map((p) => p.type).join(" -> ")}`)
      : fail(label, `${n.file}: ${problems.join("; ")}`, `fix ${n.file}, or rewrite it with containerscalectl install --force (containerscalectl install --help lists the flags)`))
  }
  const parsed = ours.filter((n) => n.error === undefined).map(ourNetwork)
  const router = parsed.some((n) => n.mode === "router")
  const member = parsed.filter((n) => n.mode === "member")
  const tunNeeded = member.some((n) => n.plugin?.["userspace"] !== true)

  for (const tool of ["ip", "nsenter"]) {
    const found = inPath(tool)
    checks.push(found !== undefined ? ok(`${tool} in PATH`, found) : fail(`${tool} in PATH`, `${tool} not found in PATH`, tool === "ip" ? "install iproute2" : "install util-linux"))
  }
  const tailscaleds = new Set(member.map((n) => (typeof n.plugin?.["tailscaledPath"] === "string" ? n.plugin["tailscaledPath"] : "tailscaled")))
  if (tailscaleds.size === 0) tailscaleds.add("tailscaled")
  for (const tool of tailscaleds) {
    const found = inPath(tool)
    if (found !== undefined) checks.push(ok(`${tool} in PATH`, found))
    else if (member.length > 0 || router) {
      checks.push(fail(`${tool} in PATH`, `${tool} not found${tool.includes("/") ? "" : " in PATH"}`, "install Tailscale (https://tailscale.com/download/linux)"))
    } else checks.push(warn(`${tool} in PATH`, `${tool} not found in PATH (needed once a network uses containerscale)`, "install Tailscale"))
  }

  const tun = (() => {
    try {
      return fs.statSync("/dev/net/tun").isCharacterDevice()
    } catch {
      return false
    }
  })()
  if (tun) checks.push(ok("/dev/net/tun", "character device present"))
  else if (tunNeeded) checks.push(fail("/dev/net/tun", "missing: member mode creates a TUN device in each container", "modprobe tun (or set \"userspace\": true in the network config)"))
  else checks.push(warn("/dev/net/tun", "missing (needed by member mode without userspace networking)", "modprobe tun"))

  const forward = readSysctl("net.ipv4.ip_forward")
  if (forward === "1") checks.push(ok("net.ipv4.ip_forward", "1"))
  else if (router) checks.push(fail("net.ipv4.ip_forward", `${forward ?? "unreadable"}: router mode forwards between the tailnet and the containers`, "sysctl -w net.ipv4.ip_forward=1 (and persist it in /etc/sysctl.d)"))
  else checks.push(warn("net.ipv4.ip_forward", `${forward ?? "unreadable"} (router mode needs 1)`, "sysctl -w net.ipv4.ip_forward=1"))

  checks.push(stateDirCheck(g.stateDir))
  checks.push(...ipamStoreChecks(parsed))

  const api = (yield* LocalApi).client({ socket: g.tailscaledSocket, timeout: "3 seconds" })
  const status = yield* Effect.result(api.status({ peers: false }))
  const label = "node tailscaled"
  if (Result.isFailure(status)) {
    const detail = `${g.tailscaledSocket}: ${status.failure.message}`
    checks.push(router
      ? fail(label, detail, "start tailscaled (systemctl enable --now tailscaled) and bring it up (tailscale up), or pass --tailscaled-socket")
      : warn(label, `${detail} (needed by router mode)`, "start tailscaled, or pass --tailscaled-socket"))
  } else if (status.success.BackendState !== "Running") {
    const detail = `${g.tailscaledSocket}: BackendState ${status.success.BackendState}`
    checks.push(router ? fail(label, detail, "tailscale up (log the node in)") : warn(label, detail, "tailscale up"))
  } else {
    checks.push(ok(label, `${g.tailscaledSocket}: Running, ${(status.success.Self.TailscaleIPs ?? []).join(", ")}`))
  }

  return checks
})

const stateDirCheck = (dir: string): Check => {
  const name = "state directory"
  let st: fs.Stats
  try {
    st = fs.statSync(dir)
  } catch {
    return fail(name, `${dir} does not exist`, `containerscalectl install (or install -d -m 0755 -o root ${dir})`)
  }
  if (!st.isDirectory()) return fail(name, `${dir} is not a directory`, `remove it and run containerscalectl install`)
  const uid = process.geteuid?.() ?? 0
  const problems: Array<string> = []
  if (st.uid !== 0 && st.uid !== uid) problems.push(`owned by uid ${st.uid}`)
  if ((st.mode & 0o022) !== 0) problems.push(`mode ${(st.mode & 0o777).toString(8)} is writable by group or others`)
  const member = path.join(dir, "member")
  try {
    const ms = fs.statSync(member)
    if ((ms.mode & 0o077) !== 0) problems.push(`${member} has mode ${(ms.mode & 0o777).toString(8)}: it holds node keys`)
  } catch {
    // no member folder yet
  }
  return problems.length === 0
    ? ok(name, `${dir} (mode ${(st.mode & 0o777).toString(8)})`)
    : fail(name, `${dir}: ${problems.join("; ")}`, `chown root ${dir} && chmod go-w ${dir} && chmod 0700 ${member}`)
}

/**
 * The IPAM stores of our networks, and any other store in their data directories: whether the
 * plugins refuse one (a symbolic link, another owner, writable by others), whether its journal is
 * damaged (ADD fails with 101; DEL frees nothing and notes it in `<store>/damaged`).
 */
export const ipamStoreChecks = (networks: ReadonlyArray<OurNetwork>): Array<Check> => {
  const named = new Map<string, Set<string>>()
  for (const n of networks) {
    if (n.ipam === undefined) continue
    const dataDir = ipamDataDir(n.ipam.section)
    if (!path.isAbsolute(dataDir)) continue // a problem of the network's file, reported with it
    const set = named.get(dataDir) ?? new Set<string>()
    if (n.name !== "") set.add(n.name)
    named.set(dataDir, set)
  }
  const uid = process.geteuid?.() ?? 0
  const checks: Array<Check> = []
  for (const [dataDir, names] of named) {
    let entries: Array<fs.Dirent>
    try {
      entries = fs.readdirSync(dataDir, { withFileTypes: true })
    } catch {
      continue // no store yet
    }
    const stores = new Set<string>()
    for (const e of entries) {
      const dir = path.join(dataDir, e.name)
      if (names.has(e.name) || (e.isDirectory() && ["allocations", DAMAGE_FILE].some((f) => fs.existsSync(path.join(dir, f))))) stores.add(e.name)
    }
    let good = 0
    for (const name of [...stores].sort()) {
      const label = `ipam store ${name}`
      const s = inspectStore(path.join(dataDir, name), uid)
      const damage = s.damage.length === 0 ? "" : ` ${s.damage.length} DEL(s) freed nothing because of it (last: ${s.damage[s.damage.length - 1]})`
      if (s.unsafe.length > 0) {
        checks.push(fail(
          label,
          `the plugins refuse it: ${s.unsafe.join("; ")}`,
          `find out who made it so; then make ${s.dir} a real folder owned by uid ${uid} with its files (chown -R ${uid} ${s.dir}; chmod -R go-w ${s.dir}), ` +
            `without symbolic links, or remove it`
        ))
      } else if (s.corrupt !== undefined) {
        checks.push(fail(
          label,
          `damaged, ADD fails with code 101: ${s.corrupt}${damage === "" ? "" : `;${damage}`}`,
          `stop the containers of network ${name}, then move ${path.join(s.dir, "allocations")} aside (the pool starts empty) or restore it ` +
            `from a backup; then rm ${path.join(s.dir, DAMAGE_FILE)}`
        ))
      } else if (s.damage.length > 0) {
        checks.push(warn(
          label,
          `was damaged:${damage}; its journal reads now`,
          `containerscalectl gc frees what removed containers still hold; then rm ${path.join(s.dir, DAMAGE_FILE)}`
        ))
      } else good++
    }
    if (good > 0) checks.push(ok(`ipam stores in ${dataDir}`, `${good} store(s) readable`))
  }
  return checks
}

export const renderChecks = (checks: ReadonlyArray<Check>): string =>
  checks.map((c) => `${c.status.padEnd(4)}  ${c.name}: ${c.detail}${c.fix === undefined ? "" : `\n      fix: ${c.fix}`}`).join("\n")

import { DEFAULT_STATE_DIR, Ip } from "@containerscale/core"
import { Result } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { CtlError } from "./errors.ts"
import { MARKER_KEY, PLUGIN_BINARIES, readConfDir, readNetworkFile } from "./networks.ts"

/**
 * `install` and `uninstall`: the plugins into the CNI bin directory (the multicall executable copied
 * next to its target and renamed over it, so a runtime never executes a half-written file, and a
 * link to it for each other plugin name) and a conflist
 * carrying our marker. Both are idempotent and say what they changed.
 */

export type Action = "installed" | "updated" | "unchanged" | "removed" | "absent" | "created" | "kept"

export interface Change {
  readonly path: string
  readonly action: Action
  readonly detail?: string | undefined
}

export interface InstallRequest {
  readonly from: string
  readonly cniBinDir: string
  readonly cniConfDir: string
  readonly stateDir: string
  readonly network: string | undefined
  readonly mode: "router" | "member"
  readonly subnets: ReadonlyArray<string>
  readonly loginServer: string | undefined
  readonly tags: ReadonlyArray<string>
  readonly chainAfter: "bridge" | "ptp"
  readonly mtu: number | undefined
  readonly force: boolean
}

/**
 * Where the plugin binaries are when no `--from` is given: next to the running executable when it
 * is the compiled containerscalectl, else (run from source) the repository's dist/bin.
 */
export const defaultFromDir = (): string => {
  const script = process.argv[1]
  const compiled = script === undefined || script.startsWith("/$bunfs/") || script === process.execPath ||
    path.basename(process.execPath) === "containerscalectl"
  if (compiled) return path.dirname(process.execPath)
  // packages/agent/{src,dist}/cli/install.* -> <repo>/dist/bin
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../../dist/bin")
}

export const conflistPath = (confDir: string, network: string) => path.join(confDir, `containerscale-${network}.conflist`)

const NETWORK_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/

/** The bridge's name for a network: "csb" and 10 hex digits of an FNV-1a hash (fits IFNAMSIZ). */
const bridgeName = (network: string) => {
  let h = 0xcbf29ce484222325n
  for (const byte of new TextEncoder().encode(network)) h = ((h ^ BigInt(byte)) * 0x100000001b3n) & 0xffffffffffffffffn
  return `csb${h.toString(16).padStart(16, "0").slice(0, 10)}`
}

const normalizeTag = (t: string) => (t.startsWith("tag:") ? t : `tag:${t}`)

/** The conflist `install` writes for the request; fails with a usage error when the flags do not fit. */
export const buildConflist = (r: InstallRequest & { readonly network: string }): Record<string, unknown> => {
  if (!NETWORK_NAME.test(r.network)) {
    throw CtlError.usage(`--network "${r.network}" is invalid: use letters, digits, "_", "." and "-", starting with a letter or digit`)
  }
  if (r.subnets.length === 0) throw CtlError.usage(`--subnet CIDR is needed with --network (the pool the containers' addresses come from)`)
  for (const s of r.subnets) {
    const subnet = Ip.parseSubnet(s)
    if (Result.isFailure(subnet)) throw CtlError.usage(`--subnet: ${subnet.failure}; give a CIDR such as 10.244.1.0/24`)
  }
  if (r.mode === "router" && (r.loginServer !== undefined || r.tags.length > 0)) {
    throw CtlError.usage(`--login-server and --tags are for --mode member: in router mode the node's own tailscaled is on the tailnet`)
  }
  if (r.mtu !== undefined && (!Number.isInteger(r.mtu) || r.mtu < 576 || r.mtu > 65535)) {
    throw CtlError.usage(`--mtu must be between 576 and 65535, not ${r.mtu}`)
  }
  const ownState = path.resolve(r.stateDir) !== DEFAULT_STATE_DIR
  const ipam = {
    type: "containerscale-ipam",
    ...(ownState ? { dataDir: path.join(path.resolve(r.stateDir), "ipam") } : {}),
    ranges: r.subnets.map((subnet) => [{ subnet }])
  }
  const mtu = r.mtu === undefined ? {} : { mtu: r.mtu }
  const plugins = r.mode === "router"
    ? [{ type: "containerscale", mode: "router", ...mtu, ipam }]
    : [
      r.chainAfter === "bridge"
        ? { type: "bridge", bridge: bridgeName(r.network), isGateway: true, ipMasq: true, ...mtu, ipam }
        : { type: "ptp", ipMasq: true, ...mtu, ipam },
      {
        type: "containerscale",
        mode: "member",
        ...(r.loginServer === undefined ? {} : { loginServer: r.loginServer }),
        ...(r.tags.length === 0 ? {} : { tags: r.tags.map(normalizeTag) }),
        ...(ownState ? { stateDir: path.resolve(r.stateDir) } : {})
      }
    ]
  return { cniVersion: "1.0.0", name: r.network, [MARKER_KEY]: { managed: true }, plugins }
}

const sameFile = (a: string, b: string) => {
  try {
    const [sa, sb] = [fs.statSync(a), fs.statSync(b)]
    if (sa.size !== sb.size) return false
    return fs.readFileSync(a).equals(fs.readFileSync(b))
  } catch {
    return false
  }
}

/** Writes `target` through a temp file in its directory and a rename (a file gets `mode` and is synced; a link neither). */
const atomicWrite = (target: string, write: (tmp: string) => void, mode: number | undefined) => {
  const tmp = path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.tmp`)
  try {
    write(tmp)
    if (mode !== undefined) {
      fs.chmodSync(tmp, mode)
      const fd = fs.openSync(tmp, "r")
      try {
        fs.fsyncSync(fd)
      } finally {
        fs.closeSync(fd)
      }
    }
    fs.renameSync(tmp, target)
  } catch (e) {
    fs.rmSync(tmp, { force: true })
    throw e
  }
}

const failure = (what: string, e: unknown) => CtlError.failure(`${what}: ${(e as Error).message}`)

/**
 * The plugins as one multicall executable: `containerscale` copied, every other plugin name a
 * symbolic link to it (the executable runs the program its name says), each put in place by a rename.
 */
export const installBinaries = (from: string, binDir: string): Array<Change> => {
  const [executable, ...links] = PLUGIN_BINARIES
  const src = path.join(from, executable)
  try {
    fs.accessSync(src, fs.constants.R_OK)
  } catch {
    throw CtlError.failure(`${src} is missing: pass --from DIR with the containerscale executable (run 'npm run build' in a checkout first)`)
  }
  try {
    fs.mkdirSync(binDir, { recursive: true, mode: 0o755 })
  } catch (e) {
    throw failure(`cannot create ${binDir}`, e)
  }
  const dst = path.join(binDir, executable)
  const install = (target: string, unchanged: boolean, write: (tmp: string) => void, mode: number | undefined): Change => {
    if (unchanged) return { path: target, action: "unchanged" }
    const existed = fs.existsSync(target) || isLink(target)
    try {
      atomicWrite(target, write, mode)
    } catch (e) {
      throw failure(`cannot install ${target}`, e)
    }
    return { path: target, action: existed ? "updated" : "installed" }
  }
  const changes = [
    path.resolve(src) === path.resolve(dst)
      ? { path: dst, action: "unchanged" as const, detail: "installed from itself" }
      : install(dst, sameFile(src, dst) && (fs.statSync(dst).mode & 0o777) === 0o755, (tmp) => fs.copyFileSync(src, tmp), 0o755)
  ]
  for (const name of links) {
    const link = path.join(binDir, name)
    changes.push(install(link, isLink(link) && fs.readlinkSync(link) === executable, (tmp) => fs.symlinkSync(executable, tmp), undefined))
  }
  return changes
}

const isLink = (file: string) => {
  try {
    return fs.lstatSync(file).isSymbolicLink()
  } catch {
    return false
  }
}

const sameJson = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b)

export const installConflist = (request: InstallRequest & { readonly network: string }): Array<Change> => {
  const conflist = buildConflist(request)
  const target = conflistPath(request.cniConfDir, request.network)
  const clash = readConfDir(request.cniConfDir).find((n) => n.file !== target && n.name === request.network)
  if (clash !== undefined && !request.force) {
    throw CtlError.failure(
      `${clash.file} already defines network "${request.network}"${clash.managed ? " (written by containerscalectl)" : ""}: ` +
        `remove it, choose another --network, or pass --force to write ${target} anyway`
    )
  }
  const changes: Array<Change> = []
  let action: Action = "installed"
  if (fs.existsSync(target)) {
    const existing = readNetworkFile(target)
    if (!existing.managed && !request.force) {
      throw CtlError.failure(`${target} exists and was not written by containerscalectl (no "${MARKER_KEY}": {"managed": true}): pass --force to overwrite it`)
    }
    if (existing.error === undefined && sameJson(existing.raw, conflist)) return [{ path: target, action: "unchanged" }]
    action = "updated"
  }
  try {
    fs.mkdirSync(request.cniConfDir, { recursive: true, mode: 0o755 })
    atomicWrite(target, (tmp) => fs.writeFileSync(tmp, `${JSON.stringify(conflist, null, 2)}\n`), 0o644)
  } catch (e) {
    throw failure(`cannot write ${target}`, e)
  }
  changes.push({ path: target, action })
  return changes
}

export const ensureStateDir = (stateDir: string): Change => {
  if (fs.existsSync(stateDir)) return { path: stateDir, action: "unchanged" }
  try {
    fs.mkdirSync(stateDir, { recursive: true, mode: 0o755 })
    fs.chmodSync(stateDir, 0o755)
  } catch (e) {
    throw failure(`cannot create ${stateDir}`, e)
  }
  return { path: stateDir, action: "created" }
}

export const install = (request: InstallRequest): Array<Change> => {
  // check the flags before anything is written
  if (request.network !== undefined) buildConflist({ ...request, network: request.network })
  else if (request.subnets.length > 0 || request.loginServer !== undefined || request.tags.length > 0) {
    throw CtlError.usage(`--subnet, --login-server and --tags need --network NAME`)
  }
  const changes = installBinaries(request.from, request.cniBinDir)
  changes.push(ensureStateDir(request.stateDir))
  if (request.network !== undefined) changes.push(...installConflist({ ...request, network: request.network }))
  return changes
}

export interface UninstallRequest {
  readonly cniBinDir: string
  readonly cniConfDir: string
  /** only this network's conflist (the binaries stay); every conflist we wrote and the binaries when undefined */
  readonly network: string | undefined
}

export const uninstall = (request: UninstallRequest): Array<Change> => {
  const changes: Array<Change> = []
  const remove = (file: string) => {
    try {
      fs.rmSync(file)
      changes.push({ path: file, action: "removed" })
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") changes.push({ path: file, action: "absent" })
      else throw failure(`cannot remove ${file}`, e)
    }
  }
  const files = readConfDir(request.cniConfDir)
  const ours = files.filter((n) => n.managed && (request.network === undefined || n.name === request.network))
  for (const n of ours) remove(n.file)
  if (request.network !== undefined) {
    const target = conflistPath(request.cniConfDir, request.network)
    if (ours.length === 0) {
      const foreign = files.find((n) => n.name === request.network)
      changes.push(
        foreign === undefined
          ? { path: target, action: "absent" }
          : { path: foreign.file, action: "kept", detail: "not written by containerscalectl" }
      )
    }
    return changes
  }
  for (const name of PLUGIN_BINARIES) remove(path.join(request.cniBinDir, name))
  return changes
}

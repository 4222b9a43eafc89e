import { execFile } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { netnsPath, runCommand } from "@containerscale/testing"

/**
 * A current netavark for tests on a host whose own netavark is too old for plugins (bookworm has
 * 1.4.0; plugins arrived in 1.6.0). We take Debian trixie's netavark together with trixie's
 * loader and libc (the binary needs glibc 2.39) and run the binary through that loader, so nothing
 * gets installed and the system apt configuration is never touched: apt runs with a private
 * sources list, lists directory and archive directory.
 *
 * The unpacked runtime is cached per machine under `<cache>/trixie-netavark/<version>` (cache =
 * `$CONTAINERSCALE_TEST_CACHE`, default `/var/cache/containerscale-test`). It is built in a
 * temporary sibling directory and renamed into place only once `netavark --version` runs, so a
 * crash or a concurrent run never leaves a half-built runtime behind.
 */

export const testCacheRoot = (): string => process.env["CONTAINERSCALE_TEST_CACHE"] ?? "/var/cache/containerscale-test"

const suite = "trixie"
const packages = ["netavark", "libc6", "libgcc-s1"] as const
const libDir = (root: string) => path.join(root, "usr", "lib", "x86_64-linux-gnu")
const loader = (root: string) => path.join(libDir(root), "ld-linux-x86-64.so.2")
const binary = (root: string) => path.join(root, "usr", "lib", "podman", "netavark")

/** The Debian mirror this machine already uses (or `$CONTAINERSCALE_TEST_DEBIAN_MIRROR`). */
export const debianMirror = (): string => {
  const fromEnv = process.env["CONTAINERSCALE_TEST_DEBIAN_MIRROR"]
  if (fromEnv) return fromEnv
  const candidates: Array<string> = []
  try {
    const dir = "/etc/apt/sources.list.d"
    for (const f of fs.readdirSync(dir).filter((f) => f.endsWith(".sources")).sort()) {
      const text = fs.readFileSync(path.join(dir, f), "utf8")
      for (const m of text.matchAll(/^URIs:\s*(\S+)/gm)) candidates.push(m[1]!)
    }
  } catch {
    // no deb822 sources
  }
  try {
    const text = fs.readFileSync("/etc/apt/sources.list", "utf8")
    for (const m of text.matchAll(/^deb\s+(?:\[[^\]]*\]\s+)?(\S+)/gm)) candidates.push(m[1]!)
  } catch {
    // no one-line sources
  }
  return candidates.find((u) => /\/debian\/?$/.test(u) && !/security/.test(u)) ?? "http://deb.debian.org/debian"
}

export interface NetavarkRunResult {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
  /** stdout parsed as JSON, or undefined when it is empty or not JSON */
  readonly json: unknown
  readonly ms: number
}

export interface NetavarkRunOptions {
  /** written to netavark's stdin (objects are serialised) */
  readonly stdin?: string | object
  /** a namespace name (under /run/netns) or path to run netavark in, via `nsenter --net=` */
  readonly netns?: string
  /** netavark's `--config` directory (its state); required for setup/teardown */
  readonly configDir?: string
  /** netavark's `--plugin-directory` values */
  readonly pluginDirs?: ReadonlyArray<string>
  readonly env?: NodeJS.ProcessEnv
  readonly timeoutMs?: number
}

export interface NetavarkRuntime {
  /** the Debian package version, e.g. "1.14.0-2" */
  readonly version: string
  /** the unpacked runtime's root */
  readonly root: string
  /** true when this call downloaded it, false when it came from the cache */
  readonly downloaded: boolean
  /** how long getting the runtime took, in ms */
  readonly ms: number
  /** the argv prefix that runs netavark through trixie's loader (before netavark's own flags) */
  readonly command: ReadonlyArray<string>
  /** runs `netavark --firewall-driver none [--config D] [--plugin-directory D]... ARGS` */
  readonly run: (args: ReadonlyArray<string>, options?: NetavarkRunOptions) => Promise<NetavarkRunResult>
}

const aptOptions = (work: string, mirror: string): Array<string> => {
  const list = path.join(work, "sources.list")
  fs.writeFileSync(list, `deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror} ${suite} main\n`)
  for (const d of ["lists/partial", "archives/partial"]) fs.mkdirSync(path.join(work, d), { recursive: true })
  const empty = path.join(work, "empty.d")
  fs.mkdirSync(empty, { recursive: true })
  return [
    "-o", `Dir::Etc::sourcelist=${list}`,
    "-o", `Dir::Etc::sourceparts=${empty}`,
    "-o", `Dir::Etc::preferences=${path.join(work, "preferences")}`,
    "-o", `Dir::Etc::preferencesparts=${empty}`,
    "-o", `Dir::State::Lists=${path.join(work, "lists")}`,
    "-o", `Dir::Cache::archives=${path.join(work, "archives")}`,
    "-o", "Dir::Cache::pkgcache=",
    "-o", "Dir::Cache::srcpkgcache=",
    "-o", "APT::Sandbox::User=root",
    "-o", "Acquire::Retries=2",
    "-o", "Acquire::http::Timeout=30",
    "-o", "Acquire::Languages=none",
    "-o", "APT::Architecture=amd64",
    "-o", "APT::Architectures=amd64",
    "-q"
  ]
}

/** Cached runtimes, newest first (directory names are Debian versions; a `.complete` file marks a finished one). */
const cachedVersions = (base: string): Array<string> => {
  if (!fs.existsSync(base)) return []
  return fs.readdirSync(base)
    .filter((v) => !v.startsWith(".") && fs.existsSync(path.join(base, v, ".complete")))
    .sort((a, b) => runDpkgCompare(a, b))
}

const runDpkgCompare = (a: string, b: string): number => {
  try {
    runCommand("dpkg", ["--compare-versions", a, "gt", b])
    return -1
  } catch {
    return a === b ? 0 : 1
  }
}

const download = (base: string): string => {
  fs.mkdirSync(base, { recursive: true })
  const work = fs.mkdtempSync(path.join(base, ".tmp-"))
  try {
    const mirror = debianMirror()
    const opts = aptOptions(work, mirror)
    let updateOut = ""
    try {
      updateOut = runCommand("apt-get", [...opts, "update"], { timeoutMs: 300_000 })
    } catch (e) {
      throw new Error(`could not reach the Debian archive at ${mirror} (suite ${suite}) to fetch netavark for the tests: ${(e as Error).message}`)
    }
    const lists = fs.readdirSync(path.join(work, "lists")).filter((f) => f.includes("_Packages"))
    if (lists.length === 0) {
      throw new Error(
        `could not reach the Debian archive at ${mirror} (suite ${suite}) to fetch netavark for the tests; ` +
          `set CONTAINERSCALE_TEST_DEBIAN_MIRROR to a reachable mirror. apt-get update said:\n${updateOut.trim()}`
      )
    }
    const debs = path.join(work, "debs")
    fs.mkdirSync(debs)
    try {
      runCommand("sh", ["-c", 'cd "$1" && shift && exec apt-get "$@"', "sh", debs, ...opts, "download", ...packages], { timeoutMs: 600_000 })
    } catch (e) {
      throw new Error(`could not download ${packages.join(", ")} from ${mirror} ${suite}: ${(e as Error).message}`)
    }
    const rt = path.join(work, "rt")
    fs.mkdirSync(rt)
    let version = ""
    for (const deb of fs.readdirSync(debs).filter((f) => f.endsWith(".deb"))) {
      runCommand("dpkg-deb", ["-x", path.join(debs, deb), rt])
      if (deb.startsWith("netavark_")) version = runCommand("dpkg-deb", ["-f", path.join(debs, deb), "Version"]).trim()
    }
    if (version === "") throw new Error(`apt-get download did not fetch netavark from ${mirror} ${suite}`)
    // check it runs before publishing it
    runCommand(loader(rt), ["--library-path", libDir(rt), binary(rt), "--version"])
    fs.writeFileSync(path.join(rt, ".complete"), `${version}\n`)
    const target = path.join(base, version)
    try {
      fs.renameSync(rt, target)
    } catch (e) {
      // another run published the same version first: use theirs
      if (!fs.existsSync(path.join(target, ".complete"))) throw e
    }
    return version
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
}

let memo: NetavarkRuntime | undefined

/**
 * Ensures the cached trixie netavark runtime and returns a runner for it. The first call on a
 * machine downloads three packages (netavark, libc6, libgcc-s1; 31 MB unpacked, 6-8 s here)
 * from the Debian archive; later calls only look at the cache (about 1 ms).
 * Set `CONTAINERSCALE_TEST_REFRESH_NETAVARK=1` to look for a newer version.
 */
export const netavarkRuntime = (): NetavarkRuntime => {
  if (memo !== undefined) return memo
  const started = Date.now()
  const base = path.join(testCacheRoot(), `${suite}-netavark`)
  let version = cachedVersions(base)[0]
  let downloaded = false
  if (version === undefined || process.env["CONTAINERSCALE_TEST_REFRESH_NETAVARK"] === "1") {
    version = download(base)
    downloaded = true
  }
  const root = path.join(base, version)
  const command = [loader(root), "--library-path", libDir(root), binary(root)]
  const run = (args: ReadonlyArray<string>, options: NetavarkRunOptions = {}): Promise<NetavarkRunResult> => {
    const argv = [
      ...command,
      "--firewall-driver", "none",
      ...(options.configDir === undefined ? [] : ["--config", options.configDir]),
      ...(options.pluginDirs ?? []).flatMap((d) => ["--plugin-directory", d]),
      ...args
    ]
    const full = options.netns === undefined
      ? argv
      : ["nsenter", `--net=${options.netns.includes("/") ? options.netns : netnsPath(options.netns)}`, ...argv]
    const stdin = options.stdin === undefined ? "" : typeof options.stdin === "string" ? options.stdin : JSON.stringify(options.stdin)
    const t0 = Date.now()
    return new Promise((resolve) => {
      const child = execFile(full[0]!, full.slice(1), {
        encoding: "utf8",
        env: { ...process.env, PATH: `/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`, ...options.env },
        timeout: options.timeoutMs ?? 60_000,
        maxBuffer: 16 * 1024 * 1024
      }, (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof (error as { code?: unknown }).code === "number" ? (error as { code: number }).code : -1
        let json: unknown = undefined
        try {
          json = stdout.trim() === "" ? undefined : JSON.parse(stdout)
        } catch {
          json = undefined
        }
        resolve({ code, stdout, stderr, json, ms: Date.now() - t0 })
      })
      // netavark may exit before reading (e.g. --version, bad flags): a closed pipe is not our error
      child.stdin?.on("error", () => undefined)
      child.stdin?.end(stdin)
    })
  }
  memo = { version, root, downloaded, ms: Date.now() - started, command, run }
  return memo
}

// ---------------------------------------------------------------------------------------------
// setup / teardown payloads

export const randomContainerId = (): string => randomBytes(32).toString("hex")

export interface NetavarkSubnet {
  readonly subnet: string
  readonly gateway?: string
}

/** A network as netavark keeps it (the `network_info` entry; what `podman network create` writes). */
export interface NetavarkNetwork {
  readonly name: string
  readonly id: string
  readonly driver: string
  readonly network_interface?: string
  readonly subnets?: ReadonlyArray<NetavarkSubnet>
  readonly ipv6_enabled: boolean
  readonly internal: boolean
  readonly dns_enabled: boolean
  readonly ipam_options?: Record<string, string>
  readonly options?: Record<string, string>
  readonly [extra: string]: unknown
}

export const netavarkNetwork = (options: {
  readonly name: string
  readonly driver?: string
  readonly subnets?: ReadonlyArray<NetavarkSubnet>
  readonly options?: Record<string, string>
  readonly ipamDriver?: string
  readonly networkInterface?: string
  readonly internal?: boolean
  readonly dnsEnabled?: boolean
  readonly id?: string
}): NetavarkNetwork => ({
  name: options.name,
  id: options.id ?? randomContainerId(),
  driver: options.driver ?? "containerscale",
  network_interface: options.networkInterface ?? "",
  subnets: options.subnets ?? [],
  ipv6_enabled: (options.subnets ?? []).some((s) => s.subnet.includes(":")),
  internal: options.internal ?? false,
  dns_enabled: options.dnsEnabled ?? false,
  ipam_options: { driver: options.ipamDriver ?? ((options.subnets ?? []).length > 0 ? "host-local" : "none") },
  options: options.options ?? {}
})

export interface NetavarkAttachment {
  readonly network: NetavarkNetwork
  readonly interfaceName?: string
  readonly staticIps?: ReadonlyArray<string>
  readonly aliases?: ReadonlyArray<string>
  readonly staticMac?: string
  readonly options?: Record<string, string>
}

export interface NetavarkPortMapping {
  readonly host_ip: string
  readonly container_port: number
  readonly host_port: number
  readonly range: number
  readonly protocol: string
}

/** The JSON netavark's `setup`/`teardown` read on stdin (what podman 5 sends). */
export const netavarkSetupJson = (options: {
  readonly containerId?: string
  readonly containerName: string
  readonly attachments: ReadonlyArray<NetavarkAttachment>
  readonly portMappings?: ReadonlyArray<NetavarkPortMapping>
}) => ({
  container_id: options.containerId ?? randomContainerId(),
  container_name: options.containerName,
  port_mappings: options.portMappings ?? [],
  networks: Object.fromEntries(options.attachments.map((a, i) => [a.network.name, {
    interface_name: a.interfaceName ?? `eth${i}`,
    static_ips: a.staticIps ?? null,
    aliases: a.aliases ?? null,
    static_mac: a.staticMac ?? null,
    options: a.options ?? null
  }])),
  network_info: Object.fromEntries(options.attachments.map((a) => [a.network.name, a.network]))
})

// ---------------------------------------------------------------------------------------------
// sandbox

export interface NetavarkSandbox {
  readonly runtime: NetavarkRuntime
  readonly dir: string
  /** the `--plugin-directory` (holds links to the plugins) */
  readonly pluginDir: string
  /** the `--config` directory */
  readonly configDir: string
  /** the node namespace netavark runs in (undefined: the current one) */
  readonly netns: string | undefined
  readonly run: (args: ReadonlyArray<string>, options?: Omit<NetavarkRunOptions, "netns" | "configDir" | "pluginDirs">) => Promise<NetavarkRunResult>
  readonly setup: (containerNetns: string, payload: object, options?: { env?: NodeJS.ProcessEnv; stdin?: string }) => Promise<NetavarkRunResult>
  readonly teardown: (containerNetns: string, payload: object, options?: { env?: NodeJS.ProcessEnv; stdin?: string }) => Promise<NetavarkRunResult>
  readonly dispose: () => void
}

/**
 * netavark with a private config dir and a plugin dir holding `plugins` (driver name -> binary),
 * run inside `netns` (the throwaway "node" namespace) so host links stay untouched.
 */
export const netavarkSandbox = (options: {
  readonly prefix: string
  readonly plugins?: Record<string, string>
  readonly netns?: string
}): NetavarkSandbox => {
  const runtime = netavarkRuntime()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${options.prefix}-nv-`))
  const pluginDir = path.join(dir, "plugins")
  const configDir = path.join(dir, "config")
  fs.mkdirSync(pluginDir)
  fs.mkdirSync(configDir)
  for (const [name, file] of Object.entries(options.plugins ?? {})) fs.symlinkSync(path.resolve(file), path.join(pluginDir, name))
  const run: NetavarkSandbox["run"] = (args, o = {}) =>
    runtime.run(args, { ...o, configDir, pluginDirs: [pluginDir], ...(options.netns === undefined ? {} : { netns: options.netns }) })
  const nsPath = (ns: string) => (ns.includes("/") ? ns : netnsPath(ns))
  return {
    runtime,
    dir,
    pluginDir,
    configDir,
    netns: options.netns,
    run,
    setup: (ns, payload, o = {}) => run(["setup", nsPath(ns)], { stdin: o.stdin ?? payload, ...(o.env ? { env: o.env } : {}) }),
    teardown: (ns, payload, o = {}) => run(["teardown", nsPath(ns)], { stdin: o.stdin ?? payload, ...(o.env ? { env: o.env } : {}) }),
    dispose: () => {
      if (fs.readFileSync("/proc/self/mountinfo", "utf8").includes(` ${dir}`)) throw new Error(`mounts left under ${dir}; not deleting it`)
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
}

// ---------------------------------------------------------------------------------------------
// podman 5 in a trixie chroot

const podmanPackages = ["podman", "netavark", "aardvark-dns", "runc", "conmon", "iproute2", "catatonit", "busybox"]

export interface PodmanChroot {
  /** podman's Debian version, e.g. "5.4.2+ds1-2" */
  readonly version: string
  readonly root: string
  readonly downloaded: boolean
  readonly ms: number
}

/**
 * Ensures a cached Debian trixie chroot with podman 5, netavark and runc under
 * `<cache>/trixie-podman/<podman version>`: debootstrap (trixie's, fetched with a private apt
 * config and run from where it was unpacked, so nothing is installed on the host) builds it in a
 * temporary sibling directory that is renamed into place when podman runs. About 400 MB, a few
 * minutes the first time.
 */
export const podmanChroot = (): PodmanChroot => {
  const started = Date.now()
  const base = path.join(testCacheRoot(), `${suite}-podman`)
  const cached = cachedVersions(base)[0]
  if (cached !== undefined) return { version: cached, root: path.join(base, cached), downloaded: false, ms: Date.now() - started }
  fs.mkdirSync(base, { recursive: true })
  const work = fs.mkdtempSync(path.join(base, ".tmp-"))
  try {
    const mirror = debianMirror()
    const opts = aptOptions(work, mirror)
    try {
      runCommand("apt-get", [...opts, "update"], { timeoutMs: 300_000 })
      runCommand("sh", ["-c", 'cd "$1" && shift && exec apt-get "$@"', "sh", work, ...opts, "download", "debootstrap"], { timeoutMs: 300_000 })
    } catch (e) {
      throw new Error(`could not fetch debootstrap from the Debian archive at ${mirror} (${suite}): ${(e as Error).message}`)
    }
    const tool = path.join(work, "debootstrap")
    const deb = fs.readdirSync(work).find((f) => f.startsWith("debootstrap_") && f.endsWith(".deb"))
    if (deb === undefined) throw new Error(`apt-get download debootstrap fetched nothing from ${mirror} ${suite}`)
    runCommand("dpkg-deb", ["-x", path.join(work, deb), tool])
    const root = path.join(work, "root")
    try {
      runCommand(path.join(tool, "usr/sbin/debootstrap"), [
        "--variant=minbase",
        `--include=${podmanPackages.join(",")}`,
        suite,
        root,
        mirror
      ], { timeoutMs: 1_200_000, env: { ...process.env, DEBOOTSTRAP_DIR: path.join(tool, "usr/share/debootstrap") } })
    } catch (e) {
      throw new Error(`debootstrap of ${suite} from ${mirror} failed: ${(e as Error).message.slice(-2000)}`)
    }
    const version = runCommand("chroot", [root, "dpkg-query", "-W", "-f", "${Version}", "podman"]).trim()
    for (const bin of ["usr/bin/podman", "usr/lib/podman/netavark", "usr/sbin/runc"]) {
      if (!fs.existsSync(path.join(root, bin))) throw new Error(`debootstrap of ${suite} left no /${bin} in ${root}`)
    }
    // mount points the sandboxes cover with their own directories (podman writes its blob cache there)
    fs.mkdirSync(path.join(root, "var/lib/containers"), { recursive: true })
    // apt's downloaded packages are not needed to run it
    runCommand("chroot", [root, "apt-get", "clean"])
    fs.writeFileSync(path.join(root, ".complete"), `${version}\n`)
    const target = path.join(base, version)
    try {
      fs.renameSync(root, target)
    } catch (e) {
      if (!fs.existsSync(path.join(target, ".complete"))) throw e
    }
    return { version, root: target, downloaded: true, ms: Date.now() - started }
  } finally {
    if (fs.readFileSync("/proc/self/mountinfo", "utf8").includes(` ${work}`)) {
      // debootstrap died with /proc or /sys mounted in the chroot: leave it rather than delete through a mount
      // eslint-disable-next-line no-unsafe-finally
      throw new Error(`mounts left under ${work}; not deleting it`)
    }
    fs.rmSync(work, { recursive: true, force: true })
  }
}

/**
 * `podmanChroot` in a child process, so the minutes a first build takes do not block this event
 * loop (a test worker has to keep answering its runner meanwhile).
 */
export const ensurePodmanChroot = (): Promise<PodmanChroot> =>
  new Promise((resolve, reject) => {
    const script = `import(${JSON.stringify(import.meta.url)}).then((m) => process.stdout.write(JSON.stringify(m.podmanChroot())))`
    // run from src (tests), this file imports @containerscale/testing's src too, not its dist
    const conditions = import.meta.url.endsWith(".ts") ? ["--conditions=source"] : []
    execFile(process.execPath, [...conditions, "--input-type=module", "-e", script], { encoding: "utf8", timeout: 1_800_000, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error !== null) return reject(new Error(`could not prepare the ${suite} podman chroot: ${stderr.trim() || error.message}`))
      try {
        resolve(JSON.parse(stdout) as PodmanChroot)
      } catch {
        reject(new Error(`could not prepare the ${suite} podman chroot: unexpected output ${stdout.slice(0, 500)}`))
      }
    })
  })

export interface Podman5Sandbox {
  readonly chroot: PodmanChroot
  readonly dir: string
  /**
   * Directories of the sandbox: `dir` appears at the same path inside the chroot (on a tmpfs over
   * the chroot's /tmp), so paths under it mean the same thing to the test and to podman. `files`
   * is free for the test (a testnet's state, key files); `bin` holds the `binaries`.
   */
  readonly paths: { readonly plugins: string; readonly state: string; readonly files: string; readonly bin: string }
  /**
   * Runs a shell script in the chroot (in a private mount namespace, inside `netns` when given)
   * with podman set up for this sandbox; one call is one /run, so run a whole scenario per call.
   * The image `localhost/<prefix>-bb:latest` (busybox) is imported first.
   */
  readonly sh: (script: string, options?: { timeoutMs?: number }) => Promise<{ code: number; stdout: string; stderr: string }>
  /** the image the sandbox imports (busybox) */
  readonly image: string
  /** pass `--cgroup-parent=<this>` to every `podman run`, so dispose can remove the cgroups */
  readonly cgroupParent: string
  /** waits for (then ends) what is left in the sandbox's cgroups, removes them and the temp dir */
  readonly dispose: () => Promise<void>
}

/**
 * Podman 5 (trixie) for one test file: the cached chroot, with its own containers.conf, storage,
 * network configs and /run on temp dirs and tmpfs (the cached chroot is never written), the
 * plugins in `plugins` (driver name -> binary) in `netavark_plugin_dirs`, and everything run
 * inside `netns` (the node namespace).
 */
export const podman5Sandbox = async (options: {
  readonly prefix: string
  readonly plugins?: Record<string, string>
  /** more host binaries to show inside the chroot, as `<dir>/bin/<name>` (name -> binary) */
  readonly binaries?: Record<string, string>
  readonly netns?: string
}): Promise<Podman5Sandbox> => {
  const chroot = await ensurePodmanChroot()
  const R = chroot.root
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${options.prefix}-podman5-`))
  const paths = { plugins: path.join(dir, "plugins"), state: path.join(dir, "state"), files: path.join(dir, "files"), bin: path.join(dir, "bin") }
  const rootfs = path.join(dir, "rootfs")
  for (const d of [...Object.values(paths), path.join(dir, "storage"), path.join(dir, "etc"), path.join(dir, "etc/networks"), path.join(dir, "vartmp"), path.join(dir, "varlib"), path.join(rootfs, "bin")]) {
    fs.mkdirSync(d, { recursive: true })
  }
  // hard links or copies would be large: bind-mount each binary onto an empty file instead
  const binds: Array<[string, string]> = []
  for (const [name, file] of Object.entries(options.plugins ?? {})) {
    fs.writeFileSync(path.join(paths.plugins, name), "", { mode: 0o755 })
    binds.push([path.resolve(file), path.join(paths.plugins, name)])
  }
  for (const [name, file] of Object.entries(options.binaries ?? {})) {
    fs.writeFileSync(path.join(paths.bin, name), "", { mode: 0o755 })
    binds.push([path.resolve(file), path.join(paths.bin, name)])
  }
  fs.copyFileSync("/bin/busybox", path.join(rootfs, "bin/busybox"))
  for (const a of ["sh", "ip", "ping", "ls", "cat", "sleep", "true", "wget", "nc", "hostname"]) {
    fs.symlinkSync("busybox", path.join(rootfs, "bin", a))
  }
  fs.writeFileSync(
    path.join(dir, "etc", "containers.conf"),
    [
      "[containers]",
      `default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]`,
      "[network]",
      `network_backend = "netavark"`,
      `netavark_plugin_dirs = [${JSON.stringify(paths.plugins)}]`,
      `firewall_driver = "none"`,
      `network_config_dir = "/etc/containers/networks"`,
      "[engine]",
      `cgroup_manager = "cgroupfs"`,
      `events_logger = "file"`,
      `runtime = "runc"`,
      ""
    ].join("\n")
  )
  fs.writeFileSync(path.join(dir, "etc", "storage.conf"), `[storage]\ndriver = "vfs"\nrunroot = "/run/containers/storage"\ngraphroot = ${JSON.stringify(path.join(dir, "storage"))}\n`)
  fs.writeFileSync(path.join(dir, "etc", "policy.json"), JSON.stringify({ default: [{ type: "insecureAcceptAnything" }] }))
  fs.writeFileSync(path.join(dir, "etc", "registries.conf"), "")
  const image = `localhost/${options.prefix}-bb:latest`
  const cgroupParent = `${options.prefix}-podman5`
  const mountScript = [
    "set -e",
    `R=${JSON.stringify(R)}; D=${JSON.stringify(dir)}`,
    'mount --bind "$R" "$R"', // containers/storage remounts / inside the chroot: it must be a mount point
    'mount -t proc proc "$R/proc"',
    'mount --rbind /sys "$R/sys" && mount --make-rslave "$R/sys"',
    'mount --rbind /dev "$R/dev" && mount --make-rslave "$R/dev"',
    'mount -t tmpfs cs-run "$R/run"',
    'mount -t tmpfs cs-tmp "$R/tmp"',
    'mkdir -p "$R$D"',
    'mount --bind "$D" "$R$D"',
    ...binds.map(([from, to]) => `mount --bind ${JSON.stringify(from)} "$R"${JSON.stringify(to)}`),
    'mount --bind "$D/etc" "$R/etc/containers"',
    'mount --bind "$D/vartmp" "$R/var/tmp"',
    '[ -d "$R/var/lib/containers" ] || mkdir "$R/var/lib/containers"', // chroots built before it was made at build time
    'mount --bind "$D/varlib" "$R/var/lib/containers"',
    'exec chroot "$R" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PODMAN_IGNORE_CGROUPSV1_WARNING=1 sh -c "$1"'
  ].join("\n")
  const sh: Podman5Sandbox["sh"] = (script, o = {}) => {
    const inner = [
      "set -e",
      `if ! podman image exists ${image}; then tar -C ${rootfs} -c . | podman import -q - ${image} >/dev/null; fi`,
      script
    ].join("\n")
    const argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mountScript, "podman5", inner]
    const full = options.netns === undefined ? argv : ["nsenter", `--net=${options.netns.includes("/") ? options.netns : netnsPath(options.netns)}`, ...argv]
    return new Promise((resolve) => {
      execFile(full[0]!, full.slice(1), { encoding: "utf8", timeout: o.timeoutMs ?? 120_000, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof (error as { code?: unknown }).code === "number" ? (error as { code: number }).code : -1
        resolve({ code, stdout, stderr })
      })
    })
  }
  const dispose = async (): Promise<void> => {
    const errors: Array<unknown> = []
    // the cgroup parent the scenarios pass to podman run (cgroup v1, cgroupfs): conmon lingers a
    // moment after its container is removed; wait for it, then end what is still in our own
    // cgroups (only processes this sandbox started are there), then remove the directories
    const trees = (fs.existsSync("/sys/fs/cgroup") ? fs.readdirSync("/sys/fs/cgroup") : [])
      .map((controller) => path.join("/sys/fs/cgroup", controller, cgroupParent))
      .filter((t) => fs.existsSync(t))
    const pids = () => [...new Set(trees.flatMap(cgroupPids))]
    const deadline = Date.now() + 10_000
    while (pids().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
    for (const pid of pids()) {
      try {
        process.kill(pid, "SIGKILL")
      } catch {
        // already gone
      }
    }
    while (pids().length > 0 && Date.now() < deadline + 5_000) await new Promise((r) => setTimeout(r, 100))
    for (const tree of trees) {
      try {
        removeEmptyTree(tree)
      } catch (e) {
        errors.push(e)
      }
    }
    if (fs.readFileSync("/proc/self/mountinfo", "utf8").includes(` ${dir}`)) errors.push(new Error(`mounts left under ${dir}; not deleting it`))
    else fs.rmSync(dir, { recursive: true, force: true })
    if (errors.length > 0) throw new AggregateError(errors, "podman sandbox cleanup failed")
  }
  return { chroot, dir, paths, sh, image, cgroupParent: `/${cgroupParent}`, dispose }
}

/** The pids in a cgroup v1 directory and those below it. */
const cgroupPids = (dir: string): Array<number> => {
  if (!fs.existsSync(dir)) return []
  const own = (() => {
    try {
      return fs.readFileSync(path.join(dir, "cgroup.procs"), "utf8").split("\n").filter((l) => l !== "").map(Number)
    } catch {
      return []
    }
  })()
  return [...own, ...fs.readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).flatMap((e) => cgroupPids(path.join(dir, e.name)))]
}

const removeEmptyTree = (dir: string): void => {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) removeEmptyTree(path.join(dir, entry.name))
  }
  fs.rmdirSync(dir)
}

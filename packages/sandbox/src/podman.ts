import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { runCommand } from "@containerscale/testing"
import { removeLibcniCache } from "./leftovers.ts"

/** Applets linked into the busybox image; enough for `ip`, `sh` and friends. */
const applets = ["sh", "ip", "ls", "cat", "sleep", "true", "echo", "ifconfig", "route", "ping", "hostname"]

/**
 * Writes a minimal root filesystem into `dir`: /bin/busybox and applet links. A dynamically
 * linked busybox gets the libraries `ldd` names copied next to their host paths.
 */
export const writeBusyboxRootfs = (dir: string, busybox = "/bin/busybox"): void => {
  fs.mkdirSync(path.join(dir, "bin"), { recursive: true })
  fs.copyFileSync(busybox, path.join(dir, "bin", "busybox"))
  fs.chmodSync(path.join(dir, "bin", "busybox"), 0o755)
  for (const a of applets) fs.symlinkSync("busybox", path.join(dir, "bin", a))
  let libs = ""
  try {
    libs = runCommand("ldd", [busybox])
  } catch {
    return // "not a dynamic executable"
  }
  for (const lib of libs.matchAll(/(\/\S+)/g)) {
    const file = lib[1]!
    const target = path.join(dir, file)
    fs.mkdirSync(path.dirname(target), { recursive: true })
    fs.copyFileSync(fs.realpathSync(file), target)
  }
}

export interface ContainersConfOptions {
  /** directories searched for CNI plugins, in order */
  readonly cniPluginDirs: ReadonlyArray<string>
  /** where podman reads `*.conflist` files */
  readonly networkConfigDir: string
}

/**
 * A containers.conf for rootful podman 4.3 with its CNI backend on this machine. CONTAINERS_CONF
 * replaces the system file, so it repeats what podman needs here: runc, cgroupfs, and ulimits low
 * enough to set without CAP_SYS_RESOURCE.
 */
export const containersConf = (o: ContainersConfOptions): string =>
  [
    "[containers]",
    `default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]`,
    "[network]",
    `network_backend = "cni"`,
    `cni_plugin_dirs = [${o.cniPluginDirs.map((d) => JSON.stringify(d)).join(", ")}]`,
    `network_config_dir = ${JSON.stringify(o.networkConfigDir)}`,
    "[engine]",
    `cgroup_manager = "cgroupfs"`,
    `runtime = "runc"`,
    ""
  ].join("\n")

/** Runs podman with a private containers.conf; returns stdout or throws with stderr. */
export const podman = (conf: string, args: ReadonlyArray<string>, options: { readonly input?: string; readonly timeoutMs?: number } = {}): string =>
  runCommand("podman", args, {
    env: { ...process.env, CONTAINERS_CONF: conf },
    timeoutMs: options.timeoutMs ?? 120_000,
    ...(options.input === undefined ? {} : { input: options.input })
  })

/** Imports a directory as an image (through a tar file beside it) and returns the image's id. */
export const importRootfs = (conf: string, rootfs: string, image: string): string => {
  const tarball = `${rootfs.replace(/\/+$/, "")}.tar`
  try {
    runCommand("tar", ["-C", rootfs, "-cf", tarball, "."])
    return podman(conf, ["import", "-q", tarball, image]).trim()
  } finally {
    fs.rmSync(tarball, { force: true })
  }
}

export interface PodmanSandbox {
  readonly dir: string
  readonly image: string
  /** runs podman with the sandbox's containers.conf (inside `netns` when one was given) */
  readonly podman: (args: ReadonlyArray<string>) => string
  /** removes the containers named `<prefix>*`, the image, the libcni cache of `network` and `dir` */
  readonly dispose: () => void
}

/**
 * A private Podman set-up for one test file: a temp dir with containers.conf and a net.d holding
 * `conflist` (written by the caller from the dir), a busybox image, and podman run either directly
 * or inside a namespace that stands for the node (nsenter keeps the host's /sys and cgroups, which
 * runc needs; `ip netns exec` would remount /sys).
 */
export const podmanSandbox = (options: {
  readonly prefix: string
  readonly network: string
  readonly cniPluginDirs: ReadonlyArray<string>
  readonly conflist: (dir: string) => object
  readonly netns?: string | undefined
}): PodmanSandbox => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${options.prefix}-`))
  const netd = path.join(dir, "net.d")
  fs.mkdirSync(netd)
  const conf = path.join(dir, "containers.conf")
  fs.writeFileSync(conf, containersConf({ cniPluginDirs: options.cniPluginDirs, networkConfigDir: netd }))
  fs.writeFileSync(path.join(netd, `${options.network}.conflist`), JSON.stringify(options.conflist(dir)))
  const image = `localhost/${options.prefix}-busybox:latest`
  const run = (args: ReadonlyArray<string>) =>
    options.netns === undefined
      ? podman(conf, args)
      : runCommand("nsenter", [`--net=${options.netns}`, "podman", ...args], {
        env: { ...process.env, CONTAINERS_CONF: conf },
        timeoutMs: 120_000
      })
  writeBusyboxRootfs(path.join(dir, "rootfs"))
  importRootfs(conf, path.join(dir, "rootfs"), image)
  return {
    dir,
    image,
    podman: run,
    dispose: () => {
      const errors: Array<unknown> = []
      const attempt = (f: () => void) => {
        try {
          f()
        } catch (e) {
          errors.push(e)
        }
      }
      attempt(() => {
        const ids = run(["ps", "-a", "-q", "--filter", `name=^${options.prefix}`]).split("\n").filter((s) => s !== "")
        if (ids.length > 0) run(["rm", "-f", "-t", "0", ...ids])
      })
      attempt(() => {
        if (run(["images", "-q", image]).trim() !== "") run(["rmi", "-f", image])
      })
      attempt(() => removeLibcniCache(options.network))
      attempt(() => fs.rmSync(dir, { recursive: true, force: true }))
      if (errors.length > 0) throw new AggregateError(errors, "podman sandbox cleanup failed")
    }
  }
}

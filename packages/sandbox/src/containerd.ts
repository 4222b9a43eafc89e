import { type ChildProcess, spawn } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { runCommand } from "@containerscale/testing"
import { removeContainerdLeftovers, removeLibcniCache } from "./leftovers.ts"
import { writeBusyboxRootfs } from "./podman.ts"

const sha256 = (data: Buffer): string => `sha256:${createHash("sha256").update(data).digest("hex")}`

/**
 * Packs `rootfs` into an OCI image layout tarball at `file` that `ctr image import` loads under
 * the name `image`: one uncompressed layer, a config, a manifest and an index.
 */
export const writeOciArchive = (rootfs: string, image: string, file: string): void => {
  const layout = fs.mkdtempSync(path.join(os.tmpdir(), "oci-"))
  try {
    const blobs = path.join(layout, "blobs", "sha256")
    fs.mkdirSync(blobs, { recursive: true })
    const blob = (data: Buffer, mediaType: string) => {
      const digest = sha256(data)
      fs.writeFileSync(path.join(blobs, digest.slice(7)), data)
      return { mediaType, digest, size: data.length }
    }
    const layerFile = path.join(layout, "layer.tar")
    runCommand("tar", ["-C", rootfs, "-cf", layerFile, "."])
    const layerData = fs.readFileSync(layerFile)
    fs.rmSync(layerFile)
    const layer = blob(layerData, "application/vnd.oci.image.layer.v1.tar")
    const config = blob(
      Buffer.from(JSON.stringify({
        architecture: "amd64",
        os: "linux",
        config: { Cmd: ["/bin/sh"] },
        rootfs: { type: "layers", diff_ids: [layer.digest] }
      })),
      "application/vnd.oci.image.config.v1+json"
    )
    const manifest = blob(
      Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config, layers: [layer] })),
      "application/vnd.oci.image.manifest.v1+json"
    )
    const annotations = { "io.containerd.image.name": image, "org.opencontainers.image.ref.name": image.split(":").pop() }
    fs.writeFileSync(path.join(layout, "index.json"), JSON.stringify({ schemaVersion: 2, manifests: [{ ...manifest, annotations }] }))
    fs.writeFileSync(path.join(layout, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }))
    runCommand("tar", ["-C", layout, "-cf", file, "oci-layout", "index.json", "blobs"])
  } finally {
    fs.rmSync(layout, { recursive: true, force: true })
  }
}

export interface ContainerdSandbox {
  readonly dir: string
  readonly image: string
  /** `ctr` against the sandbox's containerd, in its own namespace, with CNI configs and plugins redirected */
  readonly ctr: (args: ReadonlyArray<string>) => string
  /** the same, left running (for a foreground `ctr run` that outlives the call) */
  readonly spawnCtr: (args: ReadonlyArray<string>) => ChildProcess
  /** removes the containers, the image, the daemon it started, its state, cgroups and libcni cache */
  readonly dispose: () => Promise<void>
}

/** Directories `ctr` needs as mount points; created only when missing and removed again afterwards. */
const cniMountPoints = ["/etc/cni/net.d", "/opt/cni/bin"]

const createMissing = (dir: string, created: Array<string>): void => {
  if (fs.existsSync(dir)) return
  createMissing(path.dirname(dir), created)
  fs.mkdirSync(dir)
  created.unshift(dir)
}

const waitForExit = (child: ChildProcess, ms: number): Promise<void> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
    }, ms)
    child.once("exit", () => {
      clearTimeout(timer)
      resolve()
    })
  })

/**
 * A private containerd 1.6 for one test file: its own root, state and socket in a temp dir, the
 * CRI plugin off, a busybox image, and `ctr` run (inside `netns` when one is given) in a private
 * mount namespace where `/etc/cni/net.d` holds only `conflist` and `/opt/cni/bin` only the
 * plugins named in `plugins` (ctr hard-codes both paths).
 */
export const containerdSandbox = async (options: {
  readonly prefix: string
  readonly network: string
  /** plugin name -> binary */
  readonly plugins: Record<string, string>
  readonly conflist: (dir: string) => object
  readonly netns?: string | undefined
}): Promise<ContainerdSandbox> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${options.prefix}-`))
  const namespace = options.prefix
  const image = `localhost/${options.prefix}-busybox:latest`
  const socket = path.join(dir, "containerd.sock")
  const netd = path.join(dir, "net.d")
  const bin = path.join(dir, "bin")
  fs.mkdirSync(netd)
  fs.mkdirSync(bin)
  fs.writeFileSync(path.join(netd, `10-${options.network}.conflist`), JSON.stringify(options.conflist(dir)))
  for (const [name, file] of Object.entries(options.plugins)) fs.symlinkSync(file, path.join(bin, name))
  fs.writeFileSync(
    path.join(dir, "config.toml"),
    [
      "version = 2",
      `root = ${JSON.stringify(path.join(dir, "root"))}`,
      `state = ${JSON.stringify(path.join(dir, "state"))}`,
      `disabled_plugins = ["io.containerd.grpc.v1.cri"]`,
      `[plugins."io.containerd.internal.v1.opt"]`,
      `  path = ${JSON.stringify(path.join(dir, "opt"))}`,
      "[grpc]",
      `  address = ${JSON.stringify(socket)}`,
      "[ttrpc]",
      `  address = ${JSON.stringify(`${socket}.ttrpc`)}`,
      ""
    ].join("\n")
  )
  const createdMountPoints: Array<string> = []
  for (const d of cniMountPoints) createMissing(d, createdMountPoints)

  const log = fs.openSync(path.join(dir, "containerd.log"), "a")
  const daemon = spawn("containerd", ["--config", path.join(dir, "config.toml")], { stdio: ["ignore", log, log] })
  fs.closeSync(log)

  const ctrArgs = (args: ReadonlyArray<string>): [string, Array<string>] => {
    const script = [
      "set -e",
      `mount --bind ${netd} /etc/cni/net.d`,
      `mount --bind ${bin} /opt/cni/bin`,
      `exec ctr -a ${socket} -n ${namespace} "$@"`
    ].join("\n")
    const inMountNs = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "ctr", ...args]
    return options.netns === undefined
      ? [inMountNs[0]!, inMountNs.slice(1)]
      : ["nsenter", [`--net=${options.netns}`, ...inMountNs]]
  }
  const ctr = (args: ReadonlyArray<string>) => runCommand(...ctrArgs(args), { timeoutMs: 120_000 })

  const dispose = async () => {
    const errors: Array<unknown> = []
    const attempt = (f: () => void) => {
      try {
        f()
      } catch (e) {
        errors.push(e)
      }
    }
    if (daemon.exitCode === null) {
      attempt(() => {
        for (const task of ctr(["task", "ls", "-q"]).split("\n").filter((s) => s !== "")) {
          runCommand(...ctrArgs(["task", "kill", "-s", "SIGKILL", task]))
        }
      })
      attempt(() => {
        for (const task of ctr(["task", "ls", "-q"]).split("\n").filter((s) => s !== "")) ctr(["task", "delete", "-f", task])
      })
      attempt(() => {
        const containers = ctr(["containers", "ls", "-q"]).split("\n").filter((s) => s !== "")
        if (containers.length > 0) ctr(["containers", "delete", ...containers])
      })
      attempt(() => {
        ctr(["images", "rm", image])
      })
      daemon.kill("SIGTERM")
    }
    await waitForExit(daemon, 10_000)
    attempt(() => removeLibcniCache(options.network))
    const ownRunDir = `/run/containerd/runc/${namespace}`
    if (fs.existsSync(ownRunDir)) attempt(() => fs.rmdirSync(ownRunDir))
    attempt(removeContainerdLeftovers)
    for (const controller of fs.readdirSync("/sys/fs/cgroup")) {
      attempt(() => removeCgroupTree(path.join("/sys/fs/cgroup", controller, namespace)))
    }
    for (const d of createdMountPoints) attempt(() => fs.rmdirSync(d))
    const mounted = fs.readFileSync("/proc/self/mountinfo", "utf8").includes(` ${dir}`)
    if (mounted) errors.push(new Error(`mounts left under ${dir}; not deleting it`))
    else fs.rmSync(dir, { recursive: true, force: true })
    if (errors.length > 0) throw new AggregateError(errors, "containerd sandbox cleanup failed")
  }

  try {
    await waitForSocket(socket, daemon, 20_000)
    writeBusyboxRootfs(path.join(dir, "rootfs"))
    writeOciArchive(path.join(dir, "rootfs"), image, path.join(dir, "image.tar"))
    ctr(["images", "import", path.join(dir, "image.tar")])
  } catch (e) {
    await dispose().catch(() => undefined)
    throw e
  }
  return { dir, image, ctr, spawnCtr: (args) => spawn(...ctrArgs(args), { stdio: ["ignore", "pipe", "pipe"] }), dispose }
}

const waitForSocket = async (socket: string, daemon: ChildProcess, ms: number): Promise<void> => {
  const deadline = Date.now() + ms
  while (!fs.existsSync(socket)) {
    if (daemon.exitCode !== null) throw new Error(`containerd exited with ${daemon.exitCode}; see its log beside ${socket}`)
    if (Date.now() > deadline) throw new Error(`containerd did not open ${socket} within ${ms} ms`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** Removes a cgroup v1 directory and the empty ones below it, deepest first. */
const removeCgroupTree = (dir: string): void => {
  if (!fs.existsSync(dir)) return
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) removeCgroupTree(path.join(dir, entry.name))
  }
  fs.rmdirSync(dir)
}

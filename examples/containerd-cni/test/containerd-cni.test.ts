import { type ContainerdSandbox, containerdSandbox, repoRoot } from "@containerscale/sandbox"
import { cleanUpAll, listLinks, netnsPath, netnsScope, uniquePrefix } from "@containerscale/testing"
import { type ChildProcess, execFile, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

/**
 * The README's commands, read from the README at test time: every ```sh block that follows a
 * `<!-- test: NAME -->` line, run as written against a private containerd 1.6 (containerdSandbox)
 * inside a namespace that stands for the node. Each block runs in a private mount namespace where
 * /etc/cni/net.d, /opt/cni/bin and /var/lib are this test's directories. What differs from a
 * user's machine:
 * - `sudo ` is dropped (the test runs as root);
 * - `ctr` is a wrapper that adds the private containerd's socket and the sandbox's namespace;
 * - the image `docker.io/library/busybox:latest` is the sandbox's busybox (the pull block is not marked);
 * - the `web` block ("a second terminal") runs as a background process, by `exec`.
 */

const README = path.join(import.meta.dirname, "..", "README.md")
const IMAGE = "docker.io/library/busybox:latest"

/** The ```sh blocks marked `<!-- test: NAME -->`, by name, in the README's order. */
const readmeBlocks = (file: string): Map<string, string> =>
  new Map([...fs.readFileSync(file, "utf8").matchAll(/^<!-- test: ([\w-]+) -->\n```sh\n([\s\S]*?)^```$/gm)].map((m) => [m[1]!, m[2]!]))

const prefix = uniquePrefix()
const scope = netnsScope(`${prefix}-`)
const work = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-containerd-example-`))
const own = { "/etc/cni/net.d": path.join(work, "net.d"), "/opt/cni/bin": path.join(work, "cni-bin"), "/var/lib": path.join(work, "var-lib") }
const wrappers = path.join(work, "wrappers")
for (const dir of [...Object.values(own), wrappers]) fs.mkdirSync(dir)

describe("examples/containerd-cni: the README under containerd 1.6", () => {
  let sandbox: ContainerdSandbox | undefined
  let nodeName = ""
  const background: Array<ChildProcess> = []

  beforeAll(async () => {
    nodeName = scope.create("node")
    // the sandbox's own CNI directories stay unused: the README's commands write the real paths,
    // which the mount namespace below makes this test's
    sandbox = await containerdSandbox({
      prefix,
      network: `${prefix}-unused`,
      plugins: {},
      conflist: () => ({ cniVersion: "1.0.0", name: `${prefix}-unused`, plugins: [] }),
      netns: netnsPath(nodeName)
    })
    const socket = path.join(sandbox.dir, "containerd.sock")
    if (!fs.existsSync(socket)) throw new Error(`the containerd sandbox has no socket at ${socket}`)
    fs.writeFileSync(path.join(wrappers, "ctr"), `#!/bin/sh\nexec /usr/bin/ctr -a ${socket} -n ${prefix} "$@"\n`, { mode: 0o755 })
  }, 60_000)

  afterAll(() =>
    cleanUpAll([
      () => Promise.all(background.map((child) => stopChild(child))),
      () => sandbox?.dispose(),
      () => scope.dispose(),
      () => fs.rmSync(work, { recursive: true, force: true })
    ]), 60_000)

  /** The shell that runs a block: in the node's namespace, with this test's directories mounted and the wrappers first in PATH. */
  const shell = (block: string): [string, Array<string>] => {
    const script = [
      "set -e",
      ...Object.entries(own).map(([at, dir]) => `mount --bind ${dir} ${at}`),
      `export PATH=${wrappers}:$PATH`,
      block.replace(/\bsudo /g, "").replaceAll(IMAGE, sandbox!.image)
    ].join("\n")
    return ["nsenter", [`--net=${netnsPath(nodeName)}`, "unshare", "--mount", "--propagation", "private", "sh", "-c", script]]
  }
  // npm's debug log goes into the test's directory, not ~/.npm/_logs
  const env = { ...process.env, npm_config_logs_dir: path.join(work, "npm-logs"), npm_config_update_notifier: "false" }

  const run = (block: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const [file, args] = shell(block)
      execFile(file, args, { cwd: repoRoot(), env, encoding: "utf8", timeout: 60_000 }, (error, stdout, stderr) =>
        error === null ? resolve(stdout) : reject(new Error(`${block}\nfailed: ${error.message}\n${stdout}${stderr}`)))
    })

  const startBackground = (block: string): { child: ChildProcess; exited: Promise<number | null>; log: () => string } => {
    if (block.trim().includes("\n")) throw new Error(`a background block must be one command:\n${block}`)
    const logFile = path.join(work, `background-${background.length}.log`)
    const fd = fs.openSync(logFile, "w")
    const [file, args] = shell(`exec ${block.trim()}`)
    const child = spawn(file, args, { cwd: repoRoot(), env, stdio: ["ignore", fd, fd] })
    fs.closeSync(fd)
    background.push(child)
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
    return { child, exited, log: () => fs.readFileSync(logFile, "utf8") }
  }

  it("installs the plugins, gives two containers pool addresses and routes through the node, and cleans up to nothing", async () => {
    const blocks = readmeBlocks(README)
    expect([...blocks.keys()]).toEqual(["install", "web", "client", "node", "stop", "uninstall"])
    const node = nodeName
    const allocations = path.join(own["/var/lib"], "containerscale", "ipam", "pods", "allocations")

    await run(blocks.get("install")!)
    expect(fs.readdirSync(own["/opt/cni/bin"]).sort()).toEqual(["containerscale", "containerscale-ipam", "loopback"])
    expect(fs.readdirSync(own["/etc/cni/net.d"])).toEqual(["05-pods.conflist"])

    const web = startBackground(blocks.get("web")!)
    const deadline = Date.now() + 30_000
    while (!/\bRUNNING\b/.test(sandbox!.ctr(["task", "ls"]).split("\n").find((l) => l.startsWith("web ")) ?? "")) {
      if (web.child.exitCode !== null || Date.now() > deadline) throw new Error(`the web container did not start:\n${web.log()}`)
      await new Promise((r) => setTimeout(r, 100))
    }

    const client = await run(blocks.get("client")!)
    expect(client).toMatch(/inet 10\.244\.1\.3\/24/)
    expect(client).toMatch(/^default via 10\.244\.1\.1 dev eth0/m)
    expect(client.match(/1 packets received/g)).toHaveLength(2) // the gateway, then web

    const routes = await run(blocks.get("node")!)
    expect(routes).toMatch(/^10\.244\.1\.2 dev cs[0-9a-f]{11} /m)
    expect(routes).not.toContain("10.244.1.3") // the client's DEL removed its route
    expect(listLinks(node, "cs")).toHaveLength(1)

    await run(blocks.get("stop")!)
    expect(await web.exited).toBe(137)
    expect(listLinks(node, "cs")).toEqual([])
    const journal = fs.readFileSync(allocations, "utf8").trim().split("\n")
    expect(journal.filter((l) => l.startsWith("+"))).toHaveLength(2)
    expect(journal.filter((l) => l.startsWith("-"))).toHaveLength(2)
    expect(fs.readdirSync(path.join(own["/var/lib"], "cni", "results"))).toEqual([]) // libcni's cache, after both DELs

    await run(blocks.get("uninstall")!)
    expect(fs.readdirSync(own["/etc/cni/net.d"])).toEqual([])
    expect(fs.readdirSync(own["/opt/cni/bin"])).toEqual([])
    expect(fs.existsSync(path.join(own["/var/lib"], "containerscale"))).toBe(false)
    expect(sandbox!.ctr(["containers", "ls", "-q"]).trim()).toBe("")
  }, 120_000)
})

/** SIGKILL a background block that is still running, and wait for it. */
const stopChild = (child: ChildProcess): Promise<void> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    child.once("exit", () => resolve())
    child.kill("SIGKILL")
  })

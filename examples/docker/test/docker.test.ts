import { dockerClient, dockerPluginSocketDir, dockerSandbox, type DockerSandbox, repoRoot } from "@containerscale/sandbox"
import { cleanUpAll, listLinks, netnsPath, netnsScope, uniquePrefix } from "@containerscale/testing"
import { type ChildProcess, execFile, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

/**
 * The README's commands, read from the README at test time: every ```sh block that follows a
 * `<!-- test: NAME -->` line, run as written against a private dockerd 20.10 (dockerSandbox)
 * inside a namespace that stands for the node. Each block runs in a private mount namespace where
 * /usr/local/bin and /var/lib are this test's directories. What differs from a user's machine:
 * - `sudo ` is dropped (the test runs as root);
 * - `docker` is a wrapper that points the 20.10 client at the private dockerd;
 * - the image `docker.io/library/busybox:latest` is the sandbox's busybox;
 * - the driver's name `containerscale` after `--name`, `-d` and `--ipam-driver` is this test's own
 *   (dockerd finds drivers in /run/docker/plugins, which the whole machine shares);
 * - the `driver` block ("a second terminal") runs as a background process, by `exec`, and its
 *   Ctrl-C is a SIGINT.
 */

const README = path.join(import.meta.dirname, "..", "README.md")
const IMAGE = "docker.io/library/busybox:latest"

/** The ```sh blocks marked `<!-- test: NAME -->`, by name, in the README's order. */
const readmeBlocks = (file: string): Map<string, string> =>
  new Map([...fs.readFileSync(file, "utf8").matchAll(/^<!-- test: ([\w-]+) -->\n```sh\n([\s\S]*?)^```$/gm)].map((m) => [m[1]!, m[2]!]))

const prefix = uniquePrefix()
const driverName = prefix
const driverSocket = path.join(dockerPluginSocketDir, `${driverName}.sock`)
const scope = netnsScope(`${prefix}-`)
const work = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-docker-example-`))
const own = { "/usr/local/bin": path.join(work, "usr-local-bin"), "/var/lib": path.join(work, "var-lib") }
const wrappers = path.join(work, "wrappers")
for (const dir of [...Object.values(own), wrappers, path.join(work, "docker-client")]) fs.mkdirSync(dir)
const hostDirs = [dockerPluginSocketDir, path.dirname(dockerPluginSocketDir)]
const hostDirsBefore = hostDirs.filter((d) => fs.existsSync(d))

describe("examples/docker: the README under dockerd 20.10", () => {
  let sandbox: DockerSandbox | undefined
  let nodeName = ""
  const background: Array<ChildProcess> = []

  beforeAll(async () => {
    nodeName = scope.create("node")
    sandbox = await dockerSandbox({ prefix, netns: netnsPath(nodeName) })
    fs.writeFileSync(
      path.join(wrappers, "docker"),
      `#!/bin/sh\nDOCKER_HOST=unix://${sandbox.socket} DOCKER_CONFIG=${path.join(work, "docker-client")} exec ${dockerClient} "$@"\n`,
      { mode: 0o755 }
    )
  }, 60_000)

  afterAll(() =>
    cleanUpAll([
      // containers and networks go while the driver still answers, then the driver
      () => sandbox?.dispose(),
      () => Promise.all(background.map((child) => stopChild(child))),
      () => fs.rmSync(driverSocket, { force: true }),
      () => hostDirs.filter((d) => !hostDirsBefore.includes(d) && fs.existsSync(d) && fs.readdirSync(d).length === 0).forEach((d) => fs.rmdirSync(d)),
      () => scope.dispose(),
      () => fs.rmSync(work, { recursive: true, force: true })
    ]), 60_000)

  /** The shell that runs a block: in the node's namespace, with this test's directories mounted and the wrappers first in PATH. */
  const shell = (block: string): [string, Array<string>] => {
    const script = [
      "set -e",
      ...Object.entries(own).map(([at, dir]) => `mount --bind ${dir} ${at}`),
      `export PATH=${wrappers}:$PATH`,
      block.replace(/\bsudo /g, "").replaceAll(IMAGE, sandbox!.image).replace(/(--name|-d|--ipam-driver) containerscale(?=\s|$)/g, `$1 ${driverName}`)
    ].join("\n")
    return ["nsenter", [`--net=${netnsPath(nodeName)}`, "unshare", "--mount", "--propagation", "private", "sh", "-c", script]]
  }

  const run = (block: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const [file, args] = shell(block)
      execFile(file, args, { cwd: repoRoot(), encoding: "utf8", timeout: 60_000 }, (error, stdout, stderr) =>
        error === null ? resolve(stdout) : reject(new Error(`${block}\nfailed: ${error.message}\n${stdout}${stderr}`)))
    })

  const startBackground = (block: string): { child: ChildProcess; exited: Promise<number | null>; log: () => string } => {
    if (block.trim().includes("\n")) throw new Error(`a background block must be one command:\n${block}`)
    const logFile = path.join(work, `background-${background.length}.log`)
    const fd = fs.openSync(logFile, "w")
    const [file, args] = shell(`exec ${block.trim()}`)
    const child = spawn(file, args, { cwd: repoRoot(), stdio: ["ignore", fd, fd] })
    fs.closeSync(fd)
    background.push(child)
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
    return { child, exited, log: () => fs.readFileSync(logFile, "utf8") }
  }

  it("installs the driver, gives two containers pool addresses and routes through the node, and cleans up to nothing", async () => {
    const blocks = readmeBlocks(README)
    expect([...blocks.keys()]).toEqual(["install", "driver", "web", "client", "node", "remove", "uninstall"])
    const store = path.join(own["/var/lib"], "containerscale", "docker")

    await run(blocks.get("install")!)
    expect(fs.readdirSync(own["/usr/local/bin"]).sort()).toEqual(["containerscale", "containerscale-docker"])

    const driver = startBackground(blocks.get("driver")!)
    const deadline = Date.now() + 20_000
    while (!fs.existsSync(driverSocket)) {
      if (driver.child.exitCode !== null || Date.now() > deadline) throw new Error(`the driver did not listen on ${driverSocket}:\n${driver.log()}`)
      await new Promise((r) => setTimeout(r, 50))
    }

    const web = await run(blocks.get("web")!)
    expect(web.trim().split("\n").at(-1)).toBe("10.241.7.2")

    const client = await run(blocks.get("client")!)
    expect(client).toMatch(/inet 10\.241\.7\.3\/24/)
    expect(client).toMatch(/^default via 10\.241\.7\.1 dev eth0/m)
    expect(client.match(/1 packets received/g)).toHaveLength(2) // the gateway, then web

    const routes = await run(blocks.get("node")!)
    expect(routes).toMatch(/^10\.241\.7\.2 dev cs[0-9a-f]{11} /m)
    expect(routes).not.toContain("10.241.7.3") // the client's endpoint is gone with it
    expect(listLinks(nodeName, "cs")).toHaveLength(1)

    await run(blocks.get("remove")!)
    expect(listLinks(nodeName, "cs")).toEqual([])
    expect(fs.readdirSync(path.join(store, "networks"))).toEqual([])
    expect(fs.readdirSync(path.join(store, "endpoints"))).toEqual([])

    driver.child.kill("SIGINT")
    expect(await driver.exited).toBe(0)
    expect(fs.existsSync(driverSocket)).toBe(false)

    await run(blocks.get("uninstall")!)
    expect(fs.readdirSync(own["/usr/local/bin"])).toEqual([])
    expect(fs.readdirSync(own["/var/lib"])).toEqual([])
    expect(sandbox!.docker(["ps", "-aq"]).trim()).toBe("")
    expect(sandbox!.docker(["network", "ls", "--format", "{{.Name}}"]).trim().split("\n").sort()).toEqual(["host", "none"]) // the sandbox runs dockerd with --bridge=none
  }, 120_000)
})

/** SIGKILL a background block that is still running, and wait for it. */
const stopChild = (child: ChildProcess): Promise<void> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    child.once("exit", () => resolve())
    child.kill("SIGKILL")
  })

import { spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { control, nodeKey, tempStateDir, unixRequest } from "./testnet-helpers.ts"

const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const repoRoot = path.resolve(packageDir, "../..")
const binary = path.join(repoRoot, "dist/testing-bin/containerscale-testnet")
const mainTs = path.join(packageDir, "src/testnet/main.ts")

interface Run {
  readonly status: number | null
  readonly stdout: string
  readonly stderr: string
}

const run = (command: ReadonlyArray<string>, args: ReadonlyArray<string>): Run => {
  const result = spawnSync(command[0]!, [...command.slice(1), ...args], { encoding: "utf8", timeout: 30_000 })
  return { status: result.status, stdout: result.stdout, stderr: result.stderr }
}

const isAlive = (pid: number) => {
  try {
    return !fs.readFileSync(`/proc/${pid}/stat`, "utf8").includes(") Z ")
  } catch {
    return false
  }
}

describe("containerscale-testnet CLI", () => {
  const dirs: Array<string> = []
  const pids = new Set<number>()
  const stateDir = () => {
    const dir = tempStateDir()
    dirs.push(dir)
    return dir
  }

  beforeAll(() => {
    const built = spawnSync(path.join(repoRoot, "scripts/compile-binary"), ["containerscale-testnet", "src/testnet/main.ts", "dist/testing-bin"], {
      cwd: packageDir,
      encoding: "utf8",
      env: { ...process.env, PATH: `${path.join(repoRoot, "node_modules/.bin")}:${process.env.PATH}` },
      timeout: 120_000
    })
    if (built.status !== 0) throw new Error(`compile-binary failed: ${built.stderr}${built.stdout}`)
  }, 150_000)

  afterEach(() => {
    for (const dir of dirs.splice(0)) {
      run([binary], ["down", "--state", dir])
      fs.rmSync(dir, { recursive: true, force: true })
    }
    for (const pid of pids) if (isAlive(pid)) process.kill(pid, "SIGKILL")
    pids.clear()
  })
  afterAll(() => {
    for (const pid of pids) if (isAlive(pid)) process.kill(pid, "SIGKILL")
  })

  const up = (command: ReadonlyArray<string>, dir: string, extra: ReadonlyArray<string> = []) => {
    const result = run(command, ["up", "--state", dir, ...extra])
    if (result.status !== 0) throw new Error(`up failed (${result.status}): ${result.stderr}`)
    const info = JSON.parse(result.stdout)
    pids.add(info.pid)
    return info
  }

  for (const [label, command] of [["compiled binary", [binary]], ["node main.ts", [process.execPath, mainTs]]] as const) {
    it(`up starts a background server and prints its JSON; up again finds it; down stops it (${label})`, async () => {
      const dir = stateDir()
      const info = up(command, dir)
      expect(Object.keys(info)).toEqual(["loginServer", "authKey", "apiUrl", "apiKey", "stateDir", "pid"])
      expect(info).toMatchObject({ loginServer: `unix:${dir}/control.sock`, stateDir: dir })
      expect(info.authKey).toMatch(/^hskey-auth-/)
      expect(info.apiKey).toMatch(/^hskey-api-/)
      expect(isAlive(info.pid)).toBe(true)
      expect(fs.readFileSync(`${dir}/testnet.pid`, "utf8").trim()).toBe(String(info.pid))
      expect(fs.readFileSync(`/proc/${info.pid}/cmdline`, "utf8").split("\0")).toEqual(expect.arrayContaining(["serve", "--state", dir]))

      // the key is reusable and ephemeral
      const testnet = { controlSocket: `${dir}/control.sock` } as Parameters<typeof control>[0]
      for (const hostname of ["one", "two"]) {
        const answer = await control(testnet, "register", { nodeKey: nodeKey(), authKey: info.authKey, hostname })
        expect(answer.status).toBe(200)
        expect(answer.body.node.ephemeral).toBe(true)
      }
      const users = await fetch(`${info.apiUrl}/api/v1/user`, { headers: { authorization: `Bearer ${info.apiKey}` } })
      expect(users.status).toBe(200)

      const again = up(command, dir)
      expect(again.pid).toBe(info.pid)
      expect(again.apiKey).toBe(info.apiKey)
      expect(again.authKey).not.toBe(info.authKey)

      const down = run(command, ["down", "--state", dir])
      expect(down.status).toBe(0)
      expect(JSON.parse(down.stdout)).toEqual({ stopped: true, pids: [info.pid] })
      expect(isAlive(info.pid)).toBe(false)
      expect(fs.readdirSync(dir).sort()).toEqual(["testnet.json", "testnet.log"])
      expect(fs.readFileSync(`${dir}/testnet.log`, "utf8")).toMatch(/got SIGTERM/)
      expect(fs.readFileSync(`${dir}/testnet.log`, "utf8")).not.toContain(info.apiKey)

      const downAgain = run(command, ["down", "--state", dir])
      expect(downAgain.status).toBe(0)
      expect(JSON.parse(downAgain.stdout)).toEqual({ stopped: false, pids: [] })
    })
  }

  it("a restarted server keeps the tailnet", async () => {
    const dir = stateDir()
    const first = up([binary], dir)
    const key = nodeKey()
    const testnet = { controlSocket: `${dir}/control.sock` } as Parameters<typeof control>[0]
    const registered = await control(testnet, "register", { nodeKey: key, authKey: first.authKey, hostname: "keeper" })
    expect(run([binary], ["down", "--state", dir]).status).toBe(0)
    const second = up([binary], dir)
    expect(second.pid).not.toBe(first.pid)
    expect(second.apiKey).toBe(first.apiKey)
    const again = await control(testnet, "register", { nodeKey: key, hostname: "keeper" })
    expect(again.body.node.id).toBe(registered.body.node.id)
  })

  it("serve runs in the foreground and stops cleanly on SIGTERM", async () => {
    const dir = stateDir()
    // a relative --state, as someone starting it by hand might give
    const child = spawn(binary, ["serve", `--state=${path.basename(dir)}`], { cwd: path.dirname(dir), stdio: ["ignore", "pipe", "pipe"] })
    pids.add(child.pid!)
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
    let output = ""
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()))
    const deadline = Date.now() + 10_000
    while (!fs.existsSync(`${dir}/testnet.ready.json`)) {
      if (Date.now() > deadline) throw new Error(`serve did not get ready: ${output}`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    const ready = JSON.parse(fs.readFileSync(`${dir}/testnet.ready.json`, "utf8"))
    expect(ready.pid).toBe(child.pid)
    expect(fs.statSync(`${dir}/testnet.ready.json`).mode & 0o777).toBe(0o600)
    const health = await unixRequest(`${dir}/control.sock`, "GET", "/health")
    expect(health.body).toEqual({ status: "pass" })
    // up finds a server started by hand
    expect(up([binary], dir).pid).toBe(child.pid)
    child.kill("SIGTERM")
    expect(await exited).toBe(0)
    expect(fs.existsSync(`${dir}/control.sock`)).toBe(false)
    expect(fs.existsSync(`${dir}/relay.sock`)).toBe(false)
    expect(fs.existsSync(`${dir}/testnet.ready.json`)).toBe(false)
  })

  it("down leaves alone a recorded pid that is not our server", () => {
    const dir = stateDir()
    const sleeper = spawn("sleep", ["30"], { stdio: "ignore" })
    pids.add(sleeper.pid!)
    fs.writeFileSync(`${dir}/testnet.pid`, `${sleeper.pid}\n`)
    const down = run([binary], ["down", "--state", dir])
    expect(down.status).toBe(0)
    expect(JSON.parse(down.stdout)).toEqual({ stopped: false, pids: [] })
    expect(isAlive(sleeper.pid!)).toBe(true)
    expect(fs.existsSync(`${dir}/testnet.pid`)).toBe(false)
    sleeper.kill("SIGKILL")
  })

  it("up reports a server that cannot start, pointing at the log", async () => {
    const dir = stateDir()
    const blocker = net.createServer()
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve))
    try {
      const port = (blocker.address() as net.AddressInfo).port
      const result = run([binary], ["up", "--state", dir, "--api-port", String(port)])
      expect(result.status).toBe(1)
      expect(result.stderr).toContain(`${dir}/testnet.log`)
      expect(result.stderr).toMatch(new RegExp(`port ${port} on 127.0.0.1 is in use`))
      expect(fs.existsSync(`${dir}/control.sock`)).toBe(false)
    } finally {
      await new Promise((resolve) => blocker.close(resolve))
    }
  })

  it("prints usage for --help and exits 2 on unknown commands or flags", () => {
    const help = run([binary], ["--help"])
    expect(help.status).toBe(0)
    expect(help.stdout).toMatch(/containerscale-testnet up --state DIR/)
    for (const args of [[], ["start"], ["up"], ["up", "--state"], ["up", "--state", "/tmp/x", "--verbose"], ["serve", "--state", "/tmp/x", "--api-port", "http"], ["down", "--state", "/tmp/x", "--api-port", "1"]]) {
      const result = run([binary], args)
      expect(result.status, args.join(" ")).toBe(2)
      expect(result.stderr).toMatch(/--help/)
    }
  })
})

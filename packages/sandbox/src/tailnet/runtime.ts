import { spawn } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { runCommand } from "@containerscale/testing"
import { repoRoot } from "../repo.ts"
import { testCacheRoot } from "../netavark.ts"

/**
 * The real daemons the tests run against, built from their Go modules: tailscaled, tailscale and
 * derper from tailscale.com, the current Headscale, and Headscale 0.25 (the older route API).
 * Each Go module of the test kit (`packages/sandbox/go/<name>`) pins its versions in go.mod and
 * go.sum; its binaries are cached under `<cache>/tailnet/<name>-<hash of go.mod and go.sum>`, so
 * a changed pin builds anew. A build goes to a temporary sibling folder, every binary is checked
 * with `--version`, and the folder is renamed into place only then: a crash or a concurrent run
 * never leaves a half-built runtime. The Go module and build caches live beside it.
 */

export const TAILSCALE_VERSION = "1.102.5"
export const HEADSCALE_VERSION = "0.29.2"
export const HEADSCALE_025_VERSION = "0.25.1"

interface GoModule {
  readonly name: string
  readonly packages: Record<string, string>
}

const modules = {
  current: {
    name: "current",
    packages: {
      tailscaled: "tailscale.com/cmd/tailscaled",
      tailscale: "tailscale.com/cmd/tailscale",
      derper: "tailscale.com/cmd/derper",
      headscale: "github.com/juanfont/headscale/cmd/headscale"
    }
  },
  headscale025: {
    name: "headscale-0.25",
    packages: { headscale: "github.com/juanfont/headscale/cmd/headscale" }
  }
} as const satisfies Record<string, GoModule>

export interface TailnetRuntime {
  readonly tailscaleVersion: string
  readonly headscaleVersion: string
  readonly headscale025Version: string
  readonly tailscaled: string
  readonly tailscale: string
  readonly derper: string
  /** the current Headscale (route approval with `approve_routes`) */
  readonly headscale: string
  /** Headscale 0.25 (route rows under `/api/v1/routes`) */
  readonly headscale025: string
  /** true when this call built something, false when everything came from the cache */
  readonly built: boolean
  readonly ms: number
}

export interface TailnetRuntimeOptions {
  /** where progress lines go while something builds (default: stderr) */
  readonly progress?: (line: string) => void
}

const moduleDir = (m: GoModule) => path.join(repoRoot(), "packages", "sandbox", "go", m.name)

const cacheDir = (m: GoModule) => {
  const hash = createHash("sha256")
  for (const f of ["go.mod", "go.sum"]) hash.update(fs.readFileSync(path.join(moduleDir(m), f)))
  return path.join(testCacheRoot(), "tailnet", `${m.name}-${hash.digest("hex").slice(0, 12)}`)
}

const isComplete = (dir: string) => fs.existsSync(path.join(dir, ".complete"))

/** The Go environment of every build: its own caches, the machine's Go, no cgo. */
const goEnv = (): NodeJS.ProcessEnv => ({
  ...process.env,
  // where Go's own archive installs it, for shells whose PATH lacks it
  PATH: `${process.env["PATH"] ?? ""}:/usr/local/go/bin`,
  GOMODCACHE: path.join(testCacheRoot(), "go", "mod"),
  GOCACHE: path.join(testCacheRoot(), "go", "build"),
  GOTOOLCHAIN: process.env["GOTOOLCHAIN"] ?? "local",
  GOFLAGS: "-mod=readonly -trimpath",
  CGO_ENABLED: "0"
})

/** Whether the real daemons are there or can be built: cached already, or a Go to build them. */
export const tailnetRuntimeAvailable = (): boolean => {
  if (Object.values(modules).every((m) => isComplete(cacheDir(m)))) return true
  try {
    runCommand("go", ["version"], { env: goEnv() })
    return true
  } catch {
    return false
  }
}

/** Runs `go build -v`, printing how many packages are done every 10 s. */
const goBuild = (m: GoModule, out: string, progress: (line: string) => void): Promise<void> =>
  new Promise((resolve, reject) => {
    const started = Date.now()
    // without the stamps tailscale.com reports its version as "1.102.5-ERR-BuildInfo"
    const stamps = `-X tailscale.com/version.longStamp=${TAILSCALE_VERSION} -X tailscale.com/version.shortStamp=${TAILSCALE_VERSION}`
    const child = spawn("go", ["build", "-v", `-ldflags=${stamps}`, "-o", `${out}/`, ...Object.values(m.packages)], {
      cwd: moduleDir(m),
      env: goEnv(),
      stdio: ["ignore", "pipe", "pipe"]
    })
    let done = 0
    let errors = ""
    const onLine = (chunk: string) => {
      for (const line of chunk.split("\n")) {
        if (line === "") continue
        // -v prints each package as it is compiled; anything else is a download note or an error
        if (/^[\w.-]+(\/[\w.~+-]+)*$/.test(line)) done++
        else if (!line.startsWith("go: downloading")) errors += `${line}\n`
      }
    }
    child.stdout.setEncoding("utf8").on("data", onLine)
    child.stderr.setEncoding("utf8").on("data", onLine)
    const timer = setInterval(() => progress(`tailnet runtime: ${m.name}: ${done} packages compiled (${Math.round((Date.now() - started) / 1000)} s)`), 10_000)
    child.on("error", (e) => {
      clearInterval(timer)
      reject(new Error(`cannot run go (${e.message}): the real tailnet tests need Go 1.26 or newer on PATH`))
    })
    child.on("close", (code) => {
      clearInterval(timer)
      if (code === 0) resolve()
      else reject(new Error(`go build of ${m.name} failed (exit ${code}):\n${errors.trim().split("\n").slice(-30).join("\n")}`))
    })
  })

const build = async (m: GoModule, target: string, progress: (line: string) => void): Promise<void> => {
  fs.mkdirSync(path.dirname(target), { recursive: true })
  const work = fs.mkdtempSync(`${target}.tmp-`)
  try {
    const started = Date.now()
    progress(`tailnet runtime: building ${Object.keys(m.packages).join(", ")} (${m.name}) into ${target}`)
    await goBuild(m, path.join(work, "bin"), progress)
    const versions = Object.keys(m.packages).map((bin) => {
      const out = runCommand(path.join(work, "bin", bin), [bin === "headscale" ? "version" : "--version"], { timeoutMs: 30_000 })
      return `${bin} ${out.trim().split("\n")[0]}`
    })
    fs.writeFileSync(path.join(work, ".complete"), `${versions.join("\n")}\n`)
    try {
      fs.renameSync(work, target)
    } catch (e) {
      // a concurrent run published the same build first: use theirs
      if (!isComplete(target)) throw e
    }
    progress(`tailnet runtime: ${m.name} built in ${Math.round((Date.now() - started) / 1000)} s: ${versions.join("; ")}`)
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
}

let memo: Promise<TailnetRuntime> | undefined

/**
 * Ensures the cached real daemons and returns their paths. From an empty cache this downloads the
 * modules and builds them (several minutes on two cores, with a progress line every 10 s); after
 * that it only looks at the cache.
 */
export const tailnetRuntime = (options: TailnetRuntimeOptions = {}): Promise<TailnetRuntime> => {
  memo ??= (async () => {
    const started = Date.now()
    const progress = options.progress ?? ((line: string) => process.stderr.write(`${line}\n`))
    let built = false
    const dirs = { current: cacheDir(modules.current), headscale025: cacheDir(modules.headscale025) }
    for (const key of ["current", "headscale025"] as const) {
      if (isComplete(dirs[key])) continue
      await build(modules[key], dirs[key], progress)
      built = true
    }
    const bin = (key: keyof typeof dirs, name: string) => path.join(dirs[key], "bin", name)
    return {
      tailscaleVersion: TAILSCALE_VERSION,
      headscaleVersion: HEADSCALE_VERSION,
      headscale025Version: HEADSCALE_025_VERSION,
      tailscaled: bin("current", "tailscaled"),
      tailscale: bin("current", "tailscale"),
      derper: bin("current", "derper"),
      headscale: bin("current", "headscale"),
      headscale025: bin("headscale025", "headscale"),
      built,
      ms: Date.now() - started
    }
  })()
  memo.catch(() => {
    memo = undefined
  })
  return memo
}

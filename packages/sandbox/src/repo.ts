import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

/** The repository root (this file is packages/sandbox/{src,dist}/repo.*). */
export const repoRoot = (): string => path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..")

/** Where the build leaves the project's binaries. */
export const distBin = (): string => path.join(repoRoot(), "dist", "bin")

/** Debian's reference CNI plugins. */
export const referencePluginDir = "/usr/lib/cni"

/** A CNI_PATH with the project's binaries first and the reference plugins after them. */
export const cniPath = (): string => `${distBin()}:${referencePluginDir}`

/** Where the build leaves the stand-ins (`tailscaled`, `containerscale-testnet`). */
export const testingBin = (): string => path.join(repoRoot(), "dist", "testing-bin")

export const tailscaledBinary = (): string => path.join(testingBin(), "tailscaled")

const newestSource = (): number => {
  const dirs = [path.join(repoRoot(), "packages/testing/src/tailscaled"), path.join(repoRoot(), "packages/testing/src/testnet")]
  return Math.max(...dirs.flatMap((dir) => fs.readdirSync(dir).filter((f) => f.endsWith(".ts")).map((f) => fs.statSync(path.join(dir, f)).mtimeMs)))
}

/**
 * Compiles the stand-in with scripts/compile-binary when the binary is missing or older than its
 * sources (when the sources are in this checkout); returns its path. Builds into a private
 * directory and renames, so parallel test files never see half a binary.
 */
export const ensureTailscaledBinary = (): string => {
  const binary = tailscaledBinary()
  const sources = path.join(repoRoot(), "packages/testing/src/tailscaled/main.ts")
  if (!fs.existsSync(sources)) return binary
  if (fs.existsSync(binary) && fs.statSync(binary).mtimeMs >= newestSource()) return binary
  const buildDir = path.join("dist", "testing-bin", `.build-${process.pid}-${Date.now()}`)
  const pathEnv = `${path.join(repoRoot(), "node_modules/.bin")}:${process.env.PATH ?? ""}`
  try {
    execFileSync(path.join(repoRoot(), "scripts/compile-binary"), ["tailscaled", "src/tailscaled/main.ts", buildDir], {
      cwd: path.join(repoRoot(), "packages/testing"),
      env: { ...process.env, PATH: pathEnv },
      stdio: ["ignore", "pipe", "pipe"]
    })
    fs.renameSync(path.join(repoRoot(), buildDir, "tailscaled"), binary)
  } finally {
    fs.rmSync(path.join(repoRoot(), buildDir), { recursive: true, force: true })
  }
  return binary
}

import * as path from "node:path"
import { fileURLToPath } from "node:url"

/** The repository root (this file is packages/testing/{src,dist}/repo.*). */
export const repoRoot = (): string => path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..")

/** Where the build leaves the project's binaries. */
export const distBin = (): string => path.join(repoRoot(), "dist", "bin")

/** Debian's reference CNI plugins. */
export const referencePluginDir = "/usr/lib/cni"

/** A CNI_PATH with the project's binaries first and the reference plugins after them. */
export const cniPath = (): string => `${distBin()}:${referencePluginDir}`

/** Where the build leaves the stand-ins (`tailscaled`, `containerscale-testnet`). */
export const testingBin = (): string => path.join(repoRoot(), "dist", "testing-bin")

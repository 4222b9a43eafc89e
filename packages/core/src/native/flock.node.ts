import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"

let addon: { tryLock(fd: number): number } | undefined

/**
 * The addon built for this CPU (native/build.sh). Found through the package, not this file's place:
 * a bundled binary carries this code far from the package's folder.
 */
const load = (): { tryLock(fd: number): number } => {
  const require = createRequire(import.meta.url)
  const root = path.dirname(require.resolve("@containerscale/core/package.json"))
  const file = path.join(root, "native", "prebuilds", `${process.platform}-${process.arch}`, "flock.node")
  if (!fs.existsSync(file)) {
    const built = fs.readdirSync(path.join(root, "native", "prebuilds")).join(", ")
    throw new Error(`@containerscale/core has no flock addon for ${process.platform}-${process.arch} (built for: ${built}); run Node on one of those, or use the compiled binaries`)
  }
  return require(file)
}

/** flock(fd, LOCK_EX | LOCK_NB): 0 when taken, else the errno (EWOULDBLOCK while another holds it). */
export const tryLock = (fd: number): number => (addon ??= load()).tryLock(fd)

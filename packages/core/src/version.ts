import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

declare const CONTAINERSCALE_VERSION: string | undefined

/**
 * The version of the package `moduleUrl` belongs to: compiled into the binaries
 * (`scripts/compile-binary` defines CONTAINERSCALE_VERSION from the package's package.json), read
 * from the nearest package.json above the module under Node. So what every binary and library
 * says follows `changeset version`.
 */
export const packageVersion = (moduleUrl: string): string => {
  if (typeof CONTAINERSCALE_VERSION === "string") return CONTAINERSCALE_VERSION
  for (let dir = path.dirname(fileURLToPath(moduleUrl)); ; dir = path.dirname(dir)) {
    try {
      return (JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")) as { version: string }).version
    } catch {
      if (path.dirname(dir) === dir) return "unknown"
    }
  }
}

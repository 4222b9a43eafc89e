import { defaultIpamOptions, IpamSection, type Pool, resolvePool } from "@containerscale/core"
import { Option, Result, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import type { IpamStoreRef, PoolResolver } from "./registry.ts"

/**
 * Pools of the networks in CNI configuration directories (`*.conflist`, `*.conf`, `*.json`), for
 * the pool gauges: a network's pool is the `ipam` section (of type containerscale-ipam, on any
 * plugin of the list) whose data dir is the store's. The directories are read again when one of
 * them changed, at most every `refreshMs`.
 */

export interface CniConfigPoolsOptions {
  /** default ["/etc/cni/net.d"] */
  readonly dirs?: ReadonlyArray<string>
  /** default 10 s */
  readonly refreshMs?: number
}

const IPAM_TYPE = "containerscale-ipam"

interface Found {
  readonly store: IpamStoreRef
  readonly pool: Pool
}

const decodeSection = Schema.decodeUnknownOption(IpamSection)

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/** The containerscale-ipam pools of one configuration file (a conflist or a single config). */
export const poolsOfCniConfig = (json: unknown): ReadonlyArray<Found> => {
  if (!isRecord(json) || typeof json.name !== "string") return []
  const plugins = Array.isArray(json.plugins) ? json.plugins : [json]
  const found: Array<Found> = []
  for (const plugin of plugins) {
    const decoded = decodeSection(isRecord(plugin) ? plugin.ipam : undefined)
    if (Option.isNone(decoded) || decoded.value.type !== IPAM_TYPE) continue
    const section = decoded.value
    const pool = resolvePool(section)
    if (Result.isFailure(pool)) continue
    const dataDir = path.resolve(section.dataDir ?? defaultIpamOptions.dataDir)
    found.push({ store: { network: json.name, dataDir }, pool: pool.success })
  }
  return found
}

export const cniConfigPools = (options: CniConfigPoolsOptions = {}): PoolResolver => {
  const dirs = options.dirs ?? ["/etc/cni/net.d"]
  const refreshMs = options.refreshMs ?? 10_000
  let checkedAt = -Infinity
  let stamp = ""
  let byStore = new Map<string, Pool>()
  const key = (s: IpamStoreRef) => `${path.resolve(s.dataDir)}\0${s.network}`

  const reload = () => {
    const now = Date.now()
    if (now - checkedAt < refreshMs) return
    checkedAt = now
    const files: Array<string> = []
    const stamps: Array<string> = []
    for (const dir of dirs) {
      let names: Array<string>
      try {
        names = fs.readdirSync(dir).filter((n) => /\.(conflist|conf|json)$/.test(n)).sort()
      } catch {
        continue
      }
      for (const name of names) {
        const file = path.join(dir, name)
        try {
          const st = fs.statSync(file)
          files.push(file)
          stamps.push(`${file}:${st.mtimeMs}:${st.size}`)
        } catch {
          // gone meanwhile
        }
      }
    }
    const next = stamps.join("\n")
    if (next === stamp) return
    stamp = next
    const found = new Map<string, Pool>()
    for (const file of files) {
      try {
        for (const f of poolsOfCniConfig(JSON.parse(fs.readFileSync(file, "utf8")))) {
          if (!found.has(key(f.store))) found.set(key(f.store), f.pool)
        }
      } catch {
        // not JSON, or unreadable: not ours to judge
      }
    }
    byStore = found
  }

  return (store) => {
    reload()
    return byStore.get(key(store))
  }
}

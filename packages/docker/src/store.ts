import * as fs from "node:fs"
import * as path from "node:path"

/**
 * The driver's state under `<state-dir>/docker/`: dockerd never re-sends CreateNetwork or
 * RequestPool after a restart of the driver or of dockerd, so networks, endpoints and pools are
 * written to disk (atomically: a temporary file renamed over the old one) and reloaded at start.
 *
 * - `networks/<NetworkID>.json`, `endpoints/<EndpointID>.json`, `pools.json`
 * - `ipam/<PoolID>/`: the core Ipam's store of the addresses handed out from each pool
 */

export type Mode = "router" | "member"

export interface NetworkRecord {
  readonly id: string
  readonly mode: Mode
  /** the `containerscale.*` options as given (`-o`); may hold a literal auth key, so the file is 0600 */
  readonly options: Readonly<Record<string, string>>
  /** "10.240.0.0/24" */
  readonly subnet: string
  /** plain IPv4 */
  readonly gateway: string
  readonly mtu: number
  readonly internal: boolean
}

export interface EndpointRecord {
  readonly networkId: string
  readonly id: string
  /** "10.240.0.2/24" as dockerd's IPAM assigned it */
  readonly address: string
  /** the host end, `cs…` */
  readonly host: string
  /** the end dockerd moves into the sandbox, under its temporary name */
  readonly peer: string
  readonly sandboxKey?: string | undefined
}

export interface PoolRecord {
  readonly id: string
  readonly addressSpace: string
  readonly subnet: string
  readonly subPool?: string | undefined
  readonly gateway: string
  readonly refs: number
}

export const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/

const writeAtomic = (file: string, data: unknown) => {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 })
  const tmp = `${file}.${process.pid}.tmp`
  const fd = fs.openSync(tmp, "w", 0o600)
  try {
    fs.writeSync(fd, JSON.stringify(data, null, 2) + "\n")
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(tmp, file)
}

const readDir = <A>(dir: string, onBad: (file: string, e: unknown) => void): Array<A> => {
  let names: Array<string>
  try {
    names = fs.readdirSync(dir)
  } catch {
    return []
  }
  return names.filter((n) => n.endsWith(".json")).flatMap((n) => {
    try {
      return [JSON.parse(fs.readFileSync(path.join(dir, n), "utf8")) as A]
    } catch (e) {
      onBad(path.join(dir, n), e)
      return []
    }
  })
}

export interface Store {
  readonly root: string
  readonly ipamDir: string
  readonly networks: Map<string, NetworkRecord>
  readonly endpoints: Map<string, EndpointRecord>
  readonly pools: Map<string, PoolRecord>
  readonly putNetwork: (n: NetworkRecord) => void
  readonly deleteNetwork: (id: string) => void
  readonly putEndpoint: (e: EndpointRecord) => void
  readonly deleteEndpoint: (id: string) => void
  readonly putPool: (p: PoolRecord) => void
  readonly deletePool: (id: string) => void
}

/** Loads (or starts) the store in `<stateDir>/docker`; unreadable files are reported and skipped. */
export const openStore = (stateDir: string, onBad: (file: string, e: unknown) => void = () => {}): Store => {
  const root = path.join(stateDir, "docker")
  fs.mkdirSync(root, { recursive: true, mode: 0o700 })
  const file = {
    network: (id: string) => path.join(root, "networks", `${id}.json`),
    endpoint: (id: string) => path.join(root, "endpoints", `${id}.json`),
    pools: path.join(root, "pools.json")
  }
  const networks = new Map(readDir<NetworkRecord>(path.join(root, "networks"), onBad).map((n) => [n.id, n]))
  const endpoints = new Map(readDir<EndpointRecord>(path.join(root, "endpoints"), onBad).map((e) => [e.id, e]))
  let poolList: Array<PoolRecord> = []
  try {
    poolList = JSON.parse(fs.readFileSync(file.pools, "utf8")) as Array<PoolRecord>
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") onBad(file.pools, e)
  }
  const pools = new Map(poolList.map((p) => [p.id, p]))
  const savePools = () => writeAtomic(file.pools, [...pools.values()])
  return {
    root,
    ipamDir: path.join(root, "ipam"),
    networks,
    endpoints,
    pools,
    putNetwork: (n) => {
      writeAtomic(file.network(n.id), n)
      networks.set(n.id, n)
    },
    deleteNetwork: (id) => {
      fs.rmSync(file.network(id), { force: true })
      networks.delete(id)
    },
    putEndpoint: (e) => {
      writeAtomic(file.endpoint(e.id), e)
      endpoints.set(e.id, e)
    },
    deleteEndpoint: (id) => {
      fs.rmSync(file.endpoint(id), { force: true })
      endpoints.delete(id)
    },
    putPool: (p) => {
      pools.set(p.id, p)
      savePools()
    },
    deletePool: (id) => {
      pools.delete(id)
      savePools()
    }
  }
}

import * as path from "node:path"

/** What `tailscaled`'s command line asks for, after defaults. */
export interface DaemonConfig {
  /** a file path, or `mem:` for state that lives only as long as the process */
  readonly state: string
  readonly stateDir: string
  readonly socket: string
  /** an interface name, or `userspace-networking` */
  readonly tun: string
  readonly port: number
  readonly verbose: number
  readonly noLogsNoSupport: boolean
  readonly socks5Server: string
  readonly outboundHttpProxyListen: string
  readonly config: string
  readonly cleanup: boolean
  readonly printVersion: boolean
}

export const DEFAULT_SOCKET = "/var/run/tailscale/tailscaled.sock"
export const DEFAULT_STATE = "/var/lib/tailscale/tailscaled.state"
export const DEFAULT_TUN = "tailscale0"
export const USERSPACE_NETWORKING = "userspace-networking"

export const isMemState = (state: string) => state === "mem:"

/** A command line Go's flag package would refuse: print `message` and the usage, exit 2. */
export class FlagError extends Error {
  constructor(message: string, readonly exitCode = 2) {
    super(message)
  }
}

type FlagKind = "string" | "bool" | "int"

interface FlagSpec {
  readonly kind: FlagKind
  readonly usage: string
  readonly default?: string
}

const FLAGS: Record<string, FlagSpec> = {
  state: { kind: "string", usage: "absolute path of state file; use 'mem:' for in-memory state" },
  statedir: { kind: "string", usage: "path to directory for storage of config state" },
  socket: { kind: "string", usage: "path of the service unix socket", default: DEFAULT_SOCKET },
  tun: { kind: "string", usage: `tunnel interface name; use "${USERSPACE_NETWORKING}" for userspace networking`, default: DEFAULT_TUN },
  port: { kind: "int", usage: "UDP port to listen on for WireGuard and peer-to-peer traffic; 0 means automatically select (accepted, unused)", default: "0" },
  verbose: { kind: "int", usage: "log verbosity level; 0 is default, 1 or higher are increasingly verbose", default: "0" },
  "no-logs-no-support": { kind: "bool", usage: "disable log uploads; this also disables any technical support" },
  "socks5-server": { kind: "string", usage: `optional [ip]:port to run a SOCK5 server (accepted, unused)` },
  "outbound-http-proxy-listen": { kind: "string", usage: `optional [ip]:port to run an outbound HTTP proxy (accepted, unused)` },
  config: { kind: "string", usage: "path to config file (accepted, ignored by the stand-in)" },
  debug: { kind: "string", usage: "listen address ([ip]:port) of optional debug server (accepted, unused)" },
  cleanup: { kind: "bool", usage: "clean up system state and exit" },
  "encrypt-state": { kind: "bool", usage: "encrypt the state file (accepted, unused)" },
  "hardware-attestation": { kind: "bool", usage: "use hardware-backed keys (accepted, unused)" },
  "bird-socket": { kind: "string", usage: "path of the bird unix socket (accepted, unused)" },
  version: { kind: "bool", usage: "print version information and exit" }
}

export const usage = (): string =>
  [
    "Usage of tailscaled:",
    ...Object.entries(FLAGS).sort(([a], [b]) => a.localeCompare(b)).flatMap(([name, spec]) => [
      `  -${name}${spec.kind === "bool" ? "" : ` ${spec.kind}`}`,
      `    \t${spec.usage}${spec.default !== undefined && spec.default !== "" && spec.default !== "0" ? ` (default "${spec.default}")` : ""}`
    ])
  ].join("\n")

const parseBool = (name: string, value: string): boolean => {
  if (["1", "t", "T", "true", "TRUE", "True"].includes(value)) return true
  if (["0", "f", "F", "false", "FALSE", "False"].includes(value)) return false
  throw new FlagError(`invalid boolean value "${value}" for -${name}: parse error`)
}

const parseInt10 = (name: string, value: string): number => {
  if (!/^[+-]?\d+$/.test(value)) throw new FlagError(`invalid value "${value}" for flag -${name}: parse error`)
  return Number(value)
}

/** Parses argv the way Go's flag package does (`-x`, `--x`, `--x=v`, `--x v`; stops at `--` or the first non-flag). */
export const parseFlags = (argv: ReadonlyArray<string>, env: NodeJS.ProcessEnv = {}): DaemonConfig => {
  const values = new Map<string, string>()
  let i = 0
  for (; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === "--") {
      i++
      break
    }
    if (!arg.startsWith("-") || arg === "-") break
    const body = arg.replace(/^--?/, "")
    if (body === "" || body.startsWith("-") || body.startsWith("=")) throw new FlagError(`bad flag syntax: ${arg}`)
    const eq = body.indexOf("=")
    const name = eq < 0 ? body : body.slice(0, eq)
    const spec = FLAGS[name]
    if (spec === undefined) throw new FlagError(`flag provided but not defined: -${name}`)
    let value: string
    if (eq >= 0) value = body.slice(eq + 1)
    else if (spec.kind === "bool") value = "true"
    else if (i + 1 < argv.length) value = argv[++i]!
    else throw new FlagError(`flag needs an argument: -${name}`)
    if (spec.kind === "bool") parseBool(name, value)
    if (spec.kind === "int") parseInt10(name, value)
    values.set(name, value)
  }
  if (i < argv.length) throw new FlagError(`tailscaled does not take non-flag arguments: ${JSON.stringify(argv.slice(i))}`, 1)

  const str = (name: string) => values.get(name) ?? FLAGS[name]!.default ?? ""
  const bool = (name: string) => values.has(name) && parseBool(name, values.get(name)!)
  const int = (name: string) => parseInt10(name, str(name) || "0")

  let state = str("state")
  let stateDir = str("statedir")
  if (state === "" && stateDir !== "") state = path.join(stateDir, "tailscaled.state")
  if (state === "") state = DEFAULT_STATE
  if (stateDir === "" && !state.includes(":")) stateDir = path.dirname(state)

  const port = values.has("port") ? int("port") : env.PORT !== undefined && /^\d+$/.test(env.PORT) ? Number(env.PORT) : 0
  const verbose = values.has("verbose") ? int("verbose") : env.TS_LOG_VERBOSITY !== undefined && /^\d+$/.test(env.TS_LOG_VERBOSITY) ? Number(env.TS_LOG_VERBOSITY) : 0

  return {
    state,
    stateDir,
    socket: str("socket"),
    tun: str("tun") || DEFAULT_TUN,
    port,
    verbose,
    noLogsNoSupport: bool("no-logs-no-support") || env.TS_NO_LOGS_NO_SUPPORT === "true",
    socks5Server: str("socks5-server"),
    outboundHttpProxyListen: str("outbound-http-proxy-listen"),
    config: str("config"),
    cleanup: bool("cleanup"),
    printVersion: bool("version")
  }
}

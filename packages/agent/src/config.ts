import { DEFAULT_STATE_DIR, InvalidNetworkConfig, Ip } from "@containerscale/core"
import { describeIssue } from "@containerscale/core/internal"
import { defaultLocalApiSocket, nodeDaemonSocket } from "@containerscale/core/member"
import { Effect, Redacted, Result, Schema } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { parseListenAddress } from "./metrics/server.ts"

/**
 * The agent's configuration: flags (`--state-dir`, `--metrics-address`, `--config`), then the
 * environment, then the JSON config file; the first that sets a value wins. Secrets (the Headscale
 * API key) only come from the environment or a file, and are `Redacted` once read.
 */

export const ConfigFile = Schema.Struct({
  stateDir: Schema.optional(Schema.String),
  metricsAddress: Schema.optional(Schema.String),
  /** where the networks' configs are, for GC */
  cniConfDir: Schema.optional(Schema.String),
  log: Schema.optional(Schema.Struct({
    level: Schema.optional(Schema.Literals(["debug", "info", "warn", "error"])),
    file: Schema.optional(Schema.String)
  })),
  router: Schema.optional(Schema.Struct({
    /** the node's pod CIDRs; or from Kubernetes (below) */
    podCidrs: Schema.optional(Schema.Array(Schema.String)),
    /** read `spec.podCIDRs` of this Node through the in-cluster API */
    kubernetesNode: Schema.optional(Schema.String),
    /** the cluster's service CIDRs, advertised by every node that has them (the control plane picks the primary) */
    serviceCidrs: Schema.optional(Schema.Array(Schema.String)),
    /** whether the agent sets the node's RouteAll and NoSNAT (`manage`) or leaves them to the operator */
    nodePrefs: Schema.optional(Schema.Literals(["manage", "leave"])),
    /** the cluster's 4via6 site id: its IPv4 pod CIDRs are also advertised as via prefixes */
    siteId: Schema.optional(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 }))),
    /** with `siteId`: only the via prefixes, not the IPv4 pod CIDRs themselves (clusters that overlap) */
    viaOnly: Schema.optional(Schema.Boolean),
    tailscaledSocket: Schema.optional(Schema.String),
    intervalSeconds: Schema.optional(Schema.Number.check(Schema.isBetween({ minimum: 1, maximum: 3600 })))
  })),
  /**
   * The node's tailscaled for the cluster network: `host` (default) uses the node's own, at
   * `router.tailscaledSocket`; `daemon` runs and supervises one of the agent's own.
   */
  node: Schema.optional(Schema.Struct({
    mode: Schema.Literals(["host", "daemon"]),
    tailscaledPath: Schema.optional(Schema.String),
    loginServer: Schema.optional(Schema.String),
    hostname: Schema.optional(Schema.String),
    tun: Schema.optional(Schema.String),
    port: Schema.optional(Schema.Number.check(Schema.isBetween({ minimum: 0, maximum: 65535 }))),
    authKeyFile: Schema.optional(Schema.String)
  })),
  headscale: Schema.optional(Schema.Struct({
    url: Schema.String,
    apiKeyFile: Schema.optional(Schema.String)
  })),
  superviseSeconds: Schema.optional(Schema.Number.check(Schema.isBetween({ minimum: 1, maximum: 3600 }))),
  gcSeconds: Schema.optional(Schema.Number.check(Schema.isBetween({ minimum: 10, maximum: 86_400 })))
})
export type ConfigFile = typeof ConfigFile.Type

export interface AgentConfig {
  readonly stateDir: string
  readonly metricsAddress: string
  readonly cniConfDir: string
  readonly logLevel: "debug" | "info" | "warn" | "error"
  readonly logFile: string | undefined
  readonly podCidrs: ReadonlyArray<string> | undefined
  readonly serviceCidrs: ReadonlyArray<string>
  readonly nodePrefs: "manage" | "leave"
  readonly siteId?: number | undefined
  readonly viaOnly?: boolean | undefined
  readonly kubernetesNode: string | undefined
  readonly tailscaledSocket: string
  /** daemon mode: the agent's own tailscaled, whose socket is `tailscaledSocket` */
  readonly nodeDaemon?: NodeDaemonConfig | undefined
  readonly routerIntervalSeconds: number
  readonly headscale: { readonly url: string; readonly apiKey: Redacted.Redacted<string> } | undefined
  readonly superviseSeconds: number
  readonly gcSeconds: number
}

export interface NodeDaemonConfig {
  readonly dir: string
  readonly tailscaled: string
  readonly loginServer: string | undefined
  readonly hostname: string
  readonly tun: string
  readonly port: number
  readonly authKey: Redacted.Redacted<string> | undefined
  readonly keySource: string
}

export const DEFAULT_METRICS_ADDRESS = "127.0.0.1:9450"

const invalid = (message: string) => new InvalidNetworkConfig({ message })

export interface Flags {
  readonly stateDir?: string | undefined
  readonly metricsAddress?: string | undefined
  readonly config?: string | undefined
}

export const loadConfig = (flags: Flags, env: Readonly<Record<string, string | undefined>>): Effect.Effect<AgentConfig, InvalidNetworkConfig> =>
  Effect.gen(function*() {
    const configPath = flags.config ?? env["CONTAINERSCALE_CONFIG"]
    const file: ConfigFile = configPath === undefined ? {} : yield* Effect.try({
      try: () => JSON.parse(fs.readFileSync(configPath, "utf8")) as unknown,
      catch: (e) => invalid(`cannot read the config file ${configPath}: ${(e as Error).message}`)
    }).pipe(
      Effect.flatMap((json) => Schema.decodeUnknownEffect(ConfigFile, { errors: "all" })(json)),
      Effect.mapError((e) => ("issue" in e ? invalid(`invalid config file ${configPath}: ${describeIssue(e.issue)}`) : e))
    )
    const cidrs = (name: string, key: "podCidrs" | "serviceCidrs") =>
      Effect.gen(function*() {
        const fromEnv = env[name]?.split(",").map((c) => c.trim()).filter((c) => c !== "")
        const value = fromEnv ?? file.router?.[key]
        for (const cidr of value ?? []) {
          const subnet = Ip.parseSubnet(cidr)
          if (Result.isFailure(subnet)) {
            return yield* invalid(`invalid ${key === "podCidrs" ? "pod" : "service"} CIDR in ${fromEnv !== undefined ? name : `router.${key} of ${configPath}`}: ${subnet.failure}`)
          }
        }
        return value
      })
    const podCidrs = yield* cidrs("CONTAINERSCALE_POD_CIDRS", "podCidrs")
    const serviceCidrs = yield* cidrs("CONTAINERSCALE_SERVICE_CIDRS", "serviceCidrs")
    const metricsAddress = flags.metricsAddress ?? env["CONTAINERSCALE_METRICS_ADDRESS"] ?? file.metricsAddress ?? DEFAULT_METRICS_ADDRESS
    yield* Effect.try({ try: () => parseListenAddress(metricsAddress), catch: (e) => invalid((e as Error).message) })
    const url = env["CONTAINERSCALE_HEADSCALE_URL"] ?? file.headscale?.url
    let headscale: AgentConfig["headscale"]
    if (url !== undefined) {
      const keyFile = env["CONTAINERSCALE_HEADSCALE_API_KEY_FILE"] ?? file.headscale?.apiKeyFile
      const key = env["CONTAINERSCALE_HEADSCALE_API_KEY"] ?? (keyFile === undefined ? undefined : yield* Effect.try({
        try: () => fs.readFileSync(keyFile, "utf8").trim(),
        catch: (e) => invalid(`cannot read the Headscale API key file ${keyFile}: ${(e as Error).message}`)
      }))
      if (key === undefined || key === "") {
        return yield* invalid(
          `a Headscale URL is set (${url}) but no API key: set CONTAINERSCALE_HEADSCALE_API_KEY or CONTAINERSCALE_HEADSCALE_API_KEY_FILE`
        )
      }
      headscale = { url, apiKey: Redacted.make(key, { label: "headscaleApiKey" }) }
    }
    if (file.router?.viaOnly === true && file.router.siteId === undefined) {
      return yield* invalid(`router.viaOnly in ${configPath} needs router.siteId: the via prefixes are made from the cluster's site id`)
    }
    const stateDir = flags.stateDir ?? env["CONTAINERSCALE_STATE_DIR"] ?? file.stateDir ?? DEFAULT_STATE_DIR
    const kubernetesNode = env["CONTAINERSCALE_KUBERNETES_NODE"] ?? file.router?.kubernetesNode
    let nodeDaemon: NodeDaemonConfig | undefined
    if (file.node?.mode === "daemon") {
      const keyFile = env["CONTAINERSCALE_NODE_AUTH_KEY_FILE"] ?? file.node.authKeyFile
      const key = env["CONTAINERSCALE_NODE_AUTH_KEY"] ?? (keyFile === undefined ? undefined : yield* Effect.try({
        try: () => fs.readFileSync(keyFile, "utf8").trim(),
        catch: (e) => invalid(`cannot read the node's auth key file ${keyFile}: ${(e as Error).message}`)
      }))
      nodeDaemon = {
        dir: path.join(stateDir, "node"),
        tailscaled: file.node.tailscaledPath ?? "tailscaled",
        loginServer: file.node.loginServer,
        hostname: file.node.hostname ?? kubernetesNode ?? os.hostname(),
        tun: file.node.tun ?? "tailscale0",
        port: file.node.port ?? 41641,
        authKey: key === undefined || key === "" ? undefined : Redacted.make(key, { label: "nodeAuthKey" }),
        keySource: keyFile === undefined ? "CONTAINERSCALE_NODE_AUTH_KEY or CONTAINERSCALE_NODE_AUTH_KEY_FILE" : `the file ${keyFile}`
      }
    }
    return {
      stateDir,
      metricsAddress,
      cniConfDir: env["CONTAINERSCALE_CNI_CONF_DIR"] ?? file.cniConfDir ?? "/etc/cni/net.d",
      logLevel: (env["CONTAINERSCALE_LOG_LEVEL"] as AgentConfig["logLevel"] | undefined) ?? file.log?.level ?? "info",
      logFile: env["CONTAINERSCALE_LOG_FILE"] ?? file.log?.file,
      podCidrs,
      serviceCidrs: serviceCidrs ?? [],
      nodePrefs: file.router?.nodePrefs ?? "manage",
      siteId: file.router?.siteId,
      viaOnly: file.router?.viaOnly,
      kubernetesNode,
      tailscaledSocket: nodeDaemon !== undefined
        ? nodeDaemonSocket(nodeDaemon.dir)
        : env["CONTAINERSCALE_TAILSCALED_SOCKET"] ?? file.router?.tailscaledSocket ?? defaultLocalApiSocket,
      nodeDaemon,
      routerIntervalSeconds: file.router?.intervalSeconds ?? 30,
      headscale,
      superviseSeconds: file.superviseSeconds ?? 5,
      gcSeconds: file.gcSeconds ?? 300
    }
  })

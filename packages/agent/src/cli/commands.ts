import { packageVersion } from "@containerscale/core"
import { gcNode, type GcReport } from "@containerscale/core/gc"
import { Config, Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import * as path from "node:path"
import { renderChecks, runDoctor } from "./doctor.ts"
import { CtlError } from "./errors.ts"
import { type GlobalOptions } from "./globals.ts"
import { type Change, defaultFromDir, install, uninstall } from "./install.ts"
import { DEFAULT_CNI_BIN_DIR, DEFAULT_CNI_CONF_DIR, gcNetworks, memberStateDirs, ourNetworks } from "./networks.ts"
import { collectStatus, renderStatus } from "./status.ts"
import { table } from "./table.ts"
import { DEFAULT_STATE_DIR, STATE_DIR_ENV } from "@containerscale/core"
import { defaultLocalApiSocket } from "@containerscale/core/member"

export const VERSION = packageVersion(import.meta.url)

export const root = Command.make("containerscalectl").pipe(
  Command.withSharedFlags({
    stateDir: Flag.String("state-dir").pipe(
      Flag.withDescription(`The node's state directory (member folders, events); env ${STATE_DIR_ENV}, default ${DEFAULT_STATE_DIR}`),
      Flag.withFallbackConfig(Config.String(STATE_DIR_ENV)),
      Flag.withDefault(DEFAULT_STATE_DIR)
    ),
    cniConfDir: Flag.String("cni-conf-dir").pipe(
      Flag.withDescription(`Where the CNI network configurations are (default ${DEFAULT_CNI_CONF_DIR})`),
      Flag.withDefault(DEFAULT_CNI_CONF_DIR)
    ),
    cniBinDir: Flag.String("cni-bin-dir").pipe(
      Flag.withDescription(`Where the CNI plugin binaries are (default ${DEFAULT_CNI_BIN_DIR})`),
      Flag.withDefault(DEFAULT_CNI_BIN_DIR)
    ),
    tailscaledSocket: Flag.String("tailscaled-socket").pipe(
      Flag.withDescription(`The LocalAPI socket of the node's own tailscaled (default ${defaultLocalApiSocket})`),
      Flag.withDefault(defaultLocalApiSocket)
    ),
    json: Flag.Boolean("json").pipe(
      Flag.withDescription("Print JSON instead of text"),
      Flag.withDefault(false)
    )
  }),
  Command.withDescription("Inspect, check, install and clean up containerscale on this node")
)

const globals = Effect.map(root, (r): GlobalOptions => ({
  stateDir: path.resolve(r.stateDir),
  cniConfDir: path.resolve(r.cniConfDir),
  cniBinDir: path.resolve(r.cniBinDir),
  tailscaledSocket: r.tailscaledSocket,
  json: r.json
})).pipe(Effect.tap((g) => Effect.logDebug("settings", { ...g })))

const printJson = (value: unknown) => Console.log(JSON.stringify(value, null, 2))

/** Runs a synchronous step that throws CtlError (anything else becomes exit code 1). */
const sync = <A>(f: () => A) =>
  Effect.try({
    try: f,
    catch: (e) => (e instanceof CtlError ? e : CtlError.failure(e instanceof Error ? e.message : String(e)))
  })

const status = Command.make("status", {}, () =>
  Effect.gen(function*() {
    const g = yield* globals
    const s = yield* collectStatus(g)
    yield* g.json ? printJson(s) : Console.log(renderStatus(s))
  })).pipe(
    Command.withShortDescription("Show networks, pools, allocations, members and the node's tailscaled"),
    Command.withDescription(
      "Show our networks (CNI configs naming containerscale or containerscale-ipam) with their pools, utilisation and " +
        "allocations, the member-mode containers (identity, tailnet addresses, daemon), and the node's tailscaled " +
        "(state, advertised routes, routes it serves once approved)"
    ),
    Command.withExamples([
      { command: "containerscalectl status", description: "Tables of networks, allocations, members and the node's tailscaled" },
      { command: "containerscalectl status --json", description: "The same as one JSON object" }
    ])
  )

const doctor = Command.make("doctor", {}, () =>
  Effect.gen(function*() {
    const g = yield* globals
    const checks = yield* runDoctor(g)
    const failed = checks.filter((c) => c.status === "FAIL").length
    yield* g.json ? printJson({ ok: failed === 0, checks }) : Console.log(renderChecks(checks))
    if (!g.json) yield* Console.log(failed === 0 ? "\nall checks passed" : `\n${failed} check${failed === 1 ? "" : "s"} failed`)
    if (failed > 0) return yield* new CtlError({ message: "", exitCode: 1 })
  })).pipe(
    Command.withShortDescription("Check the node's setup; exit 1 when a check fails"),
    Command.withDescription(
      "Check the node: plugin binaries in the CNI bin dir, our network configs, ip/nsenter/tailscaled in PATH, /dev/net/tun, " +
        "net.ipv4.ip_forward, the state directory's permissions, and the node's tailscaled (Running, when a router-mode " +
        "network exists). Prints OK, WARN or FAIL with the fix; exits 1 when a check fails"
    )
  )

const renderChanges = (changes: ReadonlyArray<Change>) =>
  table(["ACTION", "PATH"], changes.map((c) => [c.action, `${c.path}${c.detail === undefined ? "" : ` (${c.detail})`}`]))

const networkFlag = Flag.String("network").pipe(Flag.withDescription("The network's name (the conflist's \"name\")"), Flag.optional)

const installCommand = Command.make("install", {
  from: Flag.Directory("from").pipe(
    Flag.withDescription("Where the containerscale executable is; default: the directory of this executable (the repository's dist/bin when run from source)"),
    Flag.optional
  ),
  network: networkFlag,
  mode: Flag.Literals("mode", ["router", "member"]).pipe(
    Flag.withDescription("router (default): containers get addresses from --subnet, routed through the node's tailscaled; member: each container is its own tailnet node"),
    Flag.withDefault("router")
  ),
  subnet: Flag.String("subnet").pipe(Flag.withDescription("The pool, e.g. 10.244.1.0/24; repeat for more ranges (e.g. an IPv6 one)"), Flag.atLeast(0)),
  loginServer: Flag.String("login-server").pipe(Flag.withDescription("Member mode: the control server (Headscale URL); default Tailscale's"), Flag.optional),
  tags: Flag.String("tags").pipe(Flag.withDescription("Member mode: tags of the nodes, comma-separated or repeated (\"tag:\" is added)"), Flag.atLeast(0)),
  chainAfter: Flag.Literals("chain-after", ["bridge", "ptp"]).pipe(
    Flag.withDescription("Member mode: the interface plugin ours is chained after (default bridge)"),
    Flag.withDefault("bridge")
  ),
  mtu: Flag.Int("mtu").pipe(Flag.withDescription("MTU of the container interface (router mode default 1280)"), Flag.optional),
  force: Flag.Boolean("force").pipe(Flag.withDescription("Overwrite a conflist that containerscalectl did not write"), Flag.withDefault(false))
}, (flags) =>
  Effect.gen(function*() {
    const g = yield* globals
    const changes = yield* sync(() =>
      install({
        from: Option.getOrElse(Option.map(flags.from, (f) => path.resolve(f)), defaultFromDir),
        cniBinDir: g.cniBinDir,
        cniConfDir: g.cniConfDir,
        stateDir: g.stateDir,
        network: Option.getOrUndefined(flags.network),
        mode: flags.mode,
        subnets: flags.subnet,
        loginServer: Option.getOrUndefined(flags.loginServer),
        tags: flags.tags.flatMap((t) => t.split(",")).map((t) => t.trim()).filter((t) => t !== ""),
        chainAfter: flags.chainAfter,
        mtu: Option.getOrUndefined(flags.mtu),
        force: flags.force
      })
    )
    yield* g.json ? printJson({ changes }) : Console.log(renderChanges(changes))
  })).pipe(
    Command.withShortDescription("Install the plugin binaries and, with --network, a conflist"),
    Command.withDescription(
      "Copy the containerscale executable into the CNI bin dir and link containerscale-ipam to it (temp file + rename), create the " +
        "state directory, and with --network write <cni-conf-dir>/containerscale-<network>.conflist marked as ours. " +
        "Idempotent: the same inputs change nothing (\"unchanged\"). Refuses to overwrite a conflist it did not write unless --force"
    ),
    Command.withExamples([
      { command: "containerscalectl install --network pods --subnet 10.244.1.0/24", description: "Router mode: the node routes 10.244.1.0/24 to the tailnet" },
      {
        command: "containerscalectl install --network tailnet --mode member --subnet 10.88.0.0/16 --login-server https://headscale.example.com --tags pods",
        description: "Member mode after the reference bridge: every container its own tailnet node"
      },
      { command: "containerscalectl install --from ./dist/bin --cni-bin-dir /tmp/cni/bin", description: "Only the binaries, from a build" }
    ])
  )

const uninstallCommand = Command.make("uninstall", { network: networkFlag }, (flags) =>
  Effect.gen(function*() {
    const g = yield* globals
    const changes = yield* sync(() =>
      uninstall({ cniBinDir: g.cniBinDir, cniConfDir: g.cniConfDir, network: Option.getOrUndefined(flags.network) })
    )
    yield* g.json ? printJson({ changes }) : Console.log(renderChanges(changes))
  })).pipe(
    Command.withShortDescription("Remove what install wrote"),
    Command.withDescription(
      "Remove what install wrote: every conflist carrying our marker and the plugin binaries; with --network only that " +
        "network's conflist. Conflists we did not write are kept; the state directory is kept. Idempotent"
    )
  )

const renderGc = (r: GcReport) => {
  const verb = r.dryRun ? "would release" : "released"
  const lines = [
    ...r.addresses.map((a) => `${verb} ${a.ips.join(", ")} of ${a.containerId} (${a.ifname}) in ${a.network}: host link ${a.hostInterface} is gone`),
    ...r.links.map((l) => `${r.dryRun ? "would remove" : "removed"} link ${l.name} of ${l.containerId} (${l.ifname}) in ${l.network}: ${l.reason}`),
    ...r.members.map((m) =>
      `${r.dryRun ? "would take" : "took"} member ${m.identity} (${m.containerId}) of ${m.network} off the tailnet: its netns ${m.netns} is gone` +
      (m.keptState ? " (persistent: state kept)" : "")
    ),
    ...r.errors.map((e) => `error: ${e.what}: ${e.message}`)
  ]
  return lines.length === 0 ? "nothing to collect" : lines.join("\n")
}

const gcCommand = Command.make("gc", {
  dryRun: Flag.Boolean("dry-run").pipe(Flag.withDescription("Say what would be removed, change nothing"), Flag.withDefault(false)),
  grace: Flag.Int("grace").pipe(
    Flag.withDescription("Milliseconds a router-mode host link must stay missing before its address is released (an ADD in flight allocates before it links); default 2000"),
    Flag.withDefault(2000)
  )
}, (flags) =>
  Effect.gen(function*() {
    const g = yield* globals
    if (flags.grace < 0) return yield* CtlError.usage("--grace must not be negative")
    const ours = ourNetworks(g.cniConfDir)
    const { networks, errors } = gcNetworks(ours)
    const reports: Array<GcReport> = []
    for (const [i, stateDir] of memberStateDirs(g.stateDir, ours).entries()) {
      reports.push(yield* gcNode({ stateDir, networks: i === 0 ? networks : [], dryRun: flags.dryRun, graceMs: flags.grace }))
    }
    const report: GcReport = {
      dryRun: flags.dryRun,
      addresses: reports.flatMap((r) => r.addresses),
      links: reports.flatMap((r) => r.links),
      members: reports.flatMap((r) => r.members),
      errors: [...errors.map((message) => ({ what: "network config", message })), ...reports.flatMap((r) => r.errors)]
    }
    yield* g.json ? printJson(report) : Console.log(renderGc(report))
    if (report.errors.length > 0) return yield* new CtlError({ message: "", exitCode: 1 })
  })).pipe(
    Command.withShortDescription("Collect addresses, links and members that containers left behind"),
    Command.withDescription(
      "Collect what containers left without a DEL: addresses of router-mode networks whose host link is gone, host links " +
        "with our alias whose veth peer is gone, and member-mode nodes whose container's network namespace is gone (they " +
        "leave the tailnet and their tailscaled is stopped; a persistent identity keeps its state). Exits 1 when something could not be removed"
    ),
    Command.withExamples([
      { command: "containerscalectl gc --dry-run", description: "What would be collected" }
    ])
  )

export const containerscalectl = root.pipe(
  Command.withSubcommands([status, doctor, installCommand, uninstallCommand, gcCommand])
)

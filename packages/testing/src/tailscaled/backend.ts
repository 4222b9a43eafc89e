import * as os from "node:os"
import * as path from "node:path"
import type { Tailnet, TestnetNode } from "../testnet/protocol.ts"
import { Bus } from "./bus.ts"
import { ControlClient, ControlError, type Netmap, type RegisterResult } from "./control-client.ts"
import type { DaemonConfig } from "./flags.ts"
import { USERSPACE_NETWORKING } from "./flags.ts"
import { type HealthInput, HealthTracker } from "./health.ts"
import { answerQuad100 } from "./magic-dns.ts"
import { applyMaskedPrefs, decodePrefs, freshPrefs, type Prefs, prefsError, stringList } from "./prefs.ts"
import { RelayLink } from "./relay-link.ts"
import { type BackendState, persistView, STATE_NUMBER, status, type StatusInput } from "./shapes.ts"
import { newNodeKey, type StateStore } from "./state-store.ts"
import { TunDevice } from "./tun-device.ts"

/** A request the LocalAPI must refuse; `status` and `shape` say how. */
export class BackendError extends Error {
  constructor(readonly status: number, message: string, readonly shape: "text" | "Error" | "error" = "text") {
    super(message)
  }
}

export interface StartOptions {
  readonly updatePrefs: unknown
  readonly authKey: string
}

export interface Logger {
  readonly info: (message: string) => void
  readonly debug: (message: string) => void
}

const NETMAP_INTERVAL_MS = 1000

/** Prefs besides Hostname and AdvertiseRoutes that tailscaled puts into the Hostinfo it sends to control. */
const HOSTINFO_PREFS = ["ShieldsUp", "RunSSH", "AdvertiseTags", "AdvertiseServices", "AppConnector"] as const

/**
 * The node's state machine (tailscaled's LocalBackend): prefs, login with the testnet control
 * server, the netmap, the TUN device and the relay link. Changes that talk to the control server
 * run one at a time.
 */
export class Backend {
  readonly bus = new Bus()
  readonly counters = { inboundPackets: 0, inboundBytes: 0, outboundPackets: 0, outboundBytes: 0, droppedPackets: 0 }

  private prefs: Prefs
  private nodeKey: string | undefined
  private loggedIn: boolean
  /** the auth key from `start`: memory only, never logged or saved */
  private authKey: string | undefined
  /** the node as the control server last described it; set once registered in this process */
  private self: TestnetNode | undefined
  private peers: ReadonlyArray<TestnetNode> | undefined
  private tailnet: Tailnet | undefined
  /** the last login error, until a login succeeds or the login is forgotten */
  private loginError: string | undefined
  /** a login that found the control server unreachable: the next reconcile tries again */
  private retryLogin = false
  private readonly healthTracker = new HealthTracker()
  private connected = false
  private state: BackendState
  private tun: TunDevice | undefined
  private relay: RelayLink | undefined
  private queue: Promise<unknown> = Promise.resolve()
  private ticking = false
  private ticker: NodeJS.Timeout | undefined
  private lastReportedError: string | undefined
  private configuredAddresses = ""
  /** the ControlURL the node registered with; PATCHing ControlURL takes effect at the next login */
  private controlUrl: string | undefined

  constructor(private readonly config: DaemonConfig, private readonly store: StateStore, private readonly log: Logger) {
    const saved = store.load()
    this.prefs = saved === undefined ? freshPrefs() : decodePrefs(saved.prefs, "Prefs", (saved.prefs as Prefs | null)?.Config ?? null)
    this.nodeKey = saved?.nodeKey
    this.loggedIn = saved?.loggedIn === true && saved.nodeKey !== undefined
    this.controlUrl = saved?.controlUrl
    this.state = this.computeState()
    this.healthTracker.changed(this.healthInput())
    log.info(`state: ${this.state}${this.loggedIn ? ` (node key ${this.nodeKey})` : ""}`)
  }

  get tunMode() {
    return this.config.tun !== USERSPACE_NETWORKING
  }

  /** Starts the periodic work: reconnecting a logged-in node, refreshing the netmap every second. */
  run(): void {
    this.ticker = setInterval(() => this.tick(), NETMAP_INTERVAL_MS)
    this.tick()
  }

  // ---- views -------------------------------------------------------------------------------

  currentState(): BackendState {
    return this.state
  }

  currentPrefs(): Prefs {
    return this.prefs
  }

  private healthInput(): HealthInput {
    return { state: this.state, wantRunning: this.prefs.WantRunning === true, running: this.state === "Running", loginError: this.loginError }
  }

  health() {
    return this.healthTracker.notifyHealth(this.healthInput())
  }

  /** Publishes Notify.Health when the warnings changed. */
  private syncHealth(): void {
    const changed = this.healthTracker.changed(this.healthInput())
    if (changed !== undefined) this.bus.publish({ Health: changed })
  }

  statusInput(): StatusInput {
    return {
      state: this.state,
      tun: this.tunMode,
      haveNodeKey: this.nodeKey !== undefined,
      nodeKey: this.nodeKey,
      hostname: this.hostname(),
      self: this.loggedIn ? this.self : undefined,
      peers: this.loggedIn ? this.peers : undefined,
      tailnet: this.tailnet,
      health: this.healthTracker.statusHealth(this.healthInput()),
      online: this.state === "Running" && this.relay !== undefined
    }
  }

  status(includePeers: boolean) {
    return status(this.statusInput(), includePeers)
  }

  /** Every node this one knows: itself and its peers. */
  knownNodes(): ReadonlyArray<TestnetNode> {
    if (!this.loggedIn || this.self === undefined) return []
    return [this.self, ...(this.peers ?? [])]
  }

  /** Re-reads the netmap now (for status and whois), keeping the cached one on failure. */
  async refreshNetmap(): Promise<void> {
    if (!this.connected || this.nodeKey === undefined) return
    try {
      this.applyNetmap(await this.control().netmap(this.nodeKey))
    } catch (e) {
      if (e instanceof ControlError && e.reason === "gone") void this.serial(() => this.pollNetmap())
    }
  }

  // ---- LocalAPI operations -----------------------------------------------------------------

  /** `POST start`: UpdatePrefs replaces the prefs (except Config); the auth key stays in memory. */
  start(options: StartOptions): void {
    const previous = this.prefs
    if (options.updatePrefs !== null && options.updatePrefs !== undefined) {
      const next = decodePrefs(options.updatePrefs, "Prefs.UpdatePrefs", this.prefs.Config)
      const invalid = prefsError(next)
      if (invalid !== undefined) throw new BackendError(500, invalid)
      if (next.ControlURL !== this.prefs.ControlURL && this.nodeKey !== undefined) {
        this.log.info("ControlURL changed: forgetting the login to the old control server")
        this.forgetLogin()
        next.Config = null
      }
      this.prefs = next
    }
    if (options.authKey !== "") this.authKey = options.authKey
    this.save()
    this.bus.publish({ Prefs: this.prefs })
    this.syncHealth()
    const relogin = !this.loggedIn && this.nodeKey !== undefined && this.authKey !== undefined && this.prefs.WantRunning === true
    void this.serial(async () => {
      if (relogin) await this.login()
      else await this.pushHostinfo(previous, this.prefs)
      await this.reconcile()
    })
  }

  /** `POST login-interactive`: registers with the stored auth key (or the node key alone). */
  loginInteractive(): void {
    void this.serial(async () => {
      await this.login()
      await this.reconcile()
    })
  }

  /** `POST logout`: tells the control server, then NeedsLogin with WantRunning false and LoggedOut true. */
  logout(): Promise<void> {
    return this.serial(async () => {
      this.retryLogin = false
      if (this.nodeKey === undefined) return
      if (this.loggedIn) {
        try {
          await this.control().logout(this.nodeKey)
        } catch (e) {
          if (!(e instanceof ControlError && e.reason === "gone")) throw new BackendError(500, `logout: ${(e as Error).message}`)
        }
      }
      this.forgetLogin()
      this.authKey = undefined
      // tailscaled deletes the profile: what is left are the prefs of a daemon that never logged in
      this.prefs = freshPrefs()
      this.save()
      this.bus.publish({ Prefs: this.prefs })
      this.updateState()
      this.syncHealth()
      this.log.info("logged out")
    })
  }

  /** `PATCH prefs`: applies the `…Set` fields and returns the full new prefs. */
  async editPrefs(masked: unknown): Promise<Prefs> {
    const next = applyMaskedPrefs(this.prefs, masked)
    const invalid = prefsError(next)
    if (invalid !== undefined) throw new BackendError(400, invalid, "Error")
    const previous = this.prefs
    this.prefs = next
    this.save()
    this.bus.publish({ Prefs: this.prefs })
    this.syncHealth()
    const work = this.serial(async () => {
      await this.pushHostinfo(previous, next)
      await this.reconcile()
    })
    // Stopping is quick and real tailscaled reports Stopped as soon as EditPrefs returns.
    if (previous.WantRunning === true && next.WantRunning !== true) await work
    return this.prefs
  }

  /**
   * Sends a changed Hostinfo to the control server (best effort), as tailscaled does when a pref
   * that goes into it changes: the answer also brings the node's own view up to date.
   */
  private async pushHostinfo(previous: Prefs, next: Prefs): Promise<void> {
    const hostnameChanged = next.Hostname !== previous.Hostname
    const routesChanged = JSON.stringify(stringList(next.AdvertiseRoutes)) !== JSON.stringify(stringList(previous.AdvertiseRoutes))
    const hostinfoChanged = hostnameChanged || routesChanged ||
      HOSTINFO_PREFS.some((key) => JSON.stringify(next[key] ?? null) !== JSON.stringify(previous[key] ?? null))
    if (this.self === undefined || this.nodeKey === undefined || !this.loggedIn || !hostinfoChanged) return
    try {
      this.self = await this.control().update(this.nodeKey, {
        ...(hostnameChanged ? { hostname: this.hostname() } : {}),
        ...(routesChanged ? { advertiseRoutes: stringList(next.AdvertiseRoutes) } : {})
      })
    } catch (e) {
      this.log.info(`could not tell the control server about changed prefs: ${(e as Error).message}`)
    }
  }

  /** A clean shutdown: with `mem:` state the node logs out first (best effort, 5 s). */
  async shutdown(): Promise<void> {
    if (this.ticker !== undefined) clearInterval(this.ticker)
    if (this.store.ephemeral && this.loggedIn && this.nodeKey !== undefined) {
      const nodeKey = this.nodeKey
      try {
        await Promise.race([
          this.control().logout(nodeKey),
          new Promise((_, reject) => setTimeout(() => reject(new Error("timed out after 5s")), 5000).unref())
        ])
        this.log.info("logged out (mem: state)")
      } catch (e) {
        this.log.info(`logout on shutdown failed: ${(e as Error).message}`)
      }
    }
    this.bringDown()
    this.tun?.close()
    this.tun = undefined
  }

  // ---- state machine -----------------------------------------------------------------------

  private computeState(): BackendState {
    if (!this.loggedIn) return "NeedsLogin"
    if (this.prefs.WantRunning !== true) return "Stopped"
    return this.connected ? "Running" : "Starting"
  }

  private updateState(): void {
    const next = this.computeState()
    if (next === this.state) return
    this.log.info(`state: ${this.state} -> ${next}`)
    this.state = next
    this.bus.publish({ State: STATE_NUMBER[next] })
    this.syncHealth()
  }

  /** Runs `f` after every earlier change has finished. */
  private serial<A>(f: () => Promise<A>): Promise<A> {
    const run = this.queue.then(f, f)
    this.queue = run.catch(() => undefined)
    return run
  }

  private tick(): void {
    if (this.ticking) return
    this.ticking = true
    void this.serial(async () => {
      if (this.retryLogin && !this.loggedIn && this.prefs.WantRunning === true) {
        this.retryLogin = false
        await this.login()
      }
      await this.reconcile()
    }).finally(() => (this.ticking = false))
  }

  /** Moves the network towards what the prefs and the login ask for. */
  private async reconcile(): Promise<void> {
    if (this.loggedIn && this.prefs.WantRunning === true) {
      if (!this.connected) await this.bringUp()
      else await this.pollNetmap()
      if (this.connected && this.relay === undefined) await this.connectRelay()
    } else if (this.connected) {
      this.bringDown()
    }
    this.updateState()
  }

  private async login(): Promise<void> {
    const nodeKey = this.nodeKey ?? newNodeKey()
    let result: RegisterResult
    try {
      result = await this.control(true).register(this.registerParams(nodeKey, true))
    } catch (e) {
      if (e instanceof ControlError && e.reason === "unreachable") return this.loginUnreachable(e.message)
      this.loginFailed(e instanceof ControlError ? e.message : `login failed: ${(e as Error).message}`)
      return
    }
    this.nodeKey = nodeKey
    this.controlUrl = String(this.prefs.ControlURL ?? "")
    this.bus.publish({ LoginFinished: {} })
    this.registered(result)
  }

  private registerParams(nodeKey: string, withAuthKey: boolean) {
    return {
      nodeKey,
      authKey: withAuthKey ? this.authKey : undefined,
      hostname: this.hostname(),
      advertiseTags: stringList(this.prefs.AdvertiseTags),
      advertiseRoutes: stringList(this.prefs.AdvertiseRoutes)
    }
  }

  private registered(result: RegisterResult): void {
    this.self = result.node
    this.tailnet = result.tailnet
    this.loggedIn = true
    this.loginError = undefined
    this.lastReportedError = undefined
    this.prefs = { ...this.prefs, LoggedOut: false, Config: persistView(result.node) }
    this.save()
    this.log.info(`registered as node ${result.node.id} (${result.node.dnsName}, ${result.node.addresses.join(", ")})`)
    this.bus.publish({ Prefs: this.prefs })
    this.updateState()
    this.syncHealth()
  }

  /** As tailscaled: no ErrMessage for a control server that does not answer, only the login-state warning, and a retry. */
  private loginUnreachable(message: string): void {
    this.log.info(`login: ${message}; trying again`)
    this.loginError = message
    this.retryLogin = true
    this.updateState()
    this.syncHealth()
  }

  private loginFailed(message: string): void {
    this.log.info(`login failed: ${message}`)
    this.loginError = message
    this.bus.publish({ ErrMessage: message })
    this.updateState()
    this.syncHealth()
  }

  /** Registers again with the saved node key if needed, reads the netmap, configures TUN, joins the relay. */
  private async bringUp(): Promise<void> {
    const nodeKey = this.nodeKey!
    try {
      const control = this.control()
      // a node that starts (again) sends control a new map request: its own view comes back fresh
      if (this.self === undefined) this.registered(await control.register(this.registerParams(nodeKey, true)))
      else this.self = await control.update(nodeKey, {})
      this.applyNetmap(await control.netmap(nodeKey))
    } catch (e) {
      if (e instanceof ControlError && e.reason !== "unreachable") return this.nodeGone(e.message)
      return this.reportOnce((e as Error).message)
    }
    if (this.tunMode) {
      try {
        this.tun ??= TunDevice.open(this.config.tun, (p) => this.fromTun(p), (m) => this.log.info(m))
        this.configureTun()
      } catch (e) {
        return this.reportOnce((e as Error).message)
      }
    }
    this.connected = true
    await this.connectRelay()
  }

  private async pollNetmap(): Promise<void> {
    if (!this.connected || this.nodeKey === undefined) return
    try {
      this.applyNetmap(await this.control().netmap(this.nodeKey))
    } catch (e) {
      if (e instanceof ControlError && e.reason === "gone") await this.nodeGone(`node is no longer on the tailnet: ${e.message}`)
      else this.reportOnce((e as Error).message)
    }
  }

  private bringDown(): void {
    this.relay?.close()
    this.relay = undefined
    this.tun?.deconfigure()
    this.configuredAddresses = ""
    this.connected = false
  }

  /** The control server no longer accepts this node (expired, deleted, refused): back to NeedsLogin. */
  private async nodeGone(message: string): Promise<void> {
    this.bringDown()
    this.self = undefined
    this.peers = undefined
    this.loggedIn = false
    this.save()
    this.loginFailed(message)
  }

  private forgetLogin(): void {
    this.retryLogin = false
    this.bringDown()
    this.self = undefined
    this.peers = undefined
    this.tailnet = undefined
    this.loggedIn = false
    this.nodeKey = undefined
    this.controlUrl = undefined
    this.loginError = undefined
  }

  private reportOnce(message: string): void {
    if (message === this.lastReportedError) return
    this.lastReportedError = message
    this.log.info(message)
    this.bus.publish({ ErrMessage: message })
  }

  private applyNetmap(netmap: Netmap): void {
    this.self = netmap.self
    this.peers = netmap.peers
    this.tailnet = netmap.tailnet
    if (this.connected) this.configureTun()
  }

  private configureTun(): void {
    if (this.tun === undefined || this.self === undefined) return
    const key = this.self.addresses.join(",")
    if (key === this.configuredAddresses) return
    this.tun.configure(this.self.addresses)
    this.configuredAddresses = key
  }

  private async connectRelay(): Promise<void> {
    if (this.relay !== undefined || this.nodeKey === undefined) return
    const control = this.control()
    const relaySocket = path.join(path.dirname(control.socketPath), "relay.sock")
    try {
      const link = await RelayLink.connect(relaySocket, this.nodeKey, (p) => this.fromRelay(p), (reason) => {
        if (this.relay === link) this.relay = undefined
        this.log.info(reason)
      })
      if (!this.connected) return link.close()
      this.relay = link
      this.log.debug(`relay connected: ${relaySocket}`)
    } catch (e) {
      this.reportOnce((e as Error).message)
    }
  }

  private fromTun(packet: Uint8Array): void {
    const dnsReply = this.tailnet === undefined ? undefined : answerQuad100(packet, {
      suffix: this.tailnet.magicDnsSuffix.toLowerCase(),
      addresses: (name) => this.knownNodes().find((n) => n.dnsName.toLowerCase().replace(/\.$/, "") === name)?.addresses
    })
    if (dnsReply !== undefined) return this.tun?.write(dnsReply)
    if (this.relay === undefined) {
      this.counters.droppedPackets++
      return
    }
    this.counters.outboundPackets++
    this.counters.outboundBytes += packet.length
    this.relay.send(packet)
  }

  private fromRelay(packet: Uint8Array): void {
    if (this.tun === undefined || !this.connected) {
      this.counters.droppedPackets++
      return
    }
    this.counters.inboundPackets++
    this.counters.inboundBytes += packet.length
    this.tun.write(packet)
  }

  /** The control server of the current login, or the one the prefs name for a new login. */
  private control(forLogin = false): ControlClient {
    return new ControlClient(forLogin || this.controlUrl === undefined ? String(this.prefs.ControlURL ?? "") : this.controlUrl)
  }

  private hostname(): string {
    const fromPrefs = String(this.prefs.Hostname ?? "")
    return fromPrefs !== "" ? fromPrefs : os.hostname()
  }

  private save(): void {
    this.store.save({
      version: 1,
      ...(this.nodeKey !== undefined ? { nodeKey: this.nodeKey } : {}),
      ...(this.controlUrl !== undefined ? { controlUrl: this.controlUrl } : {}),
      loggedIn: this.loggedIn,
      prefs: this.prefs
    })
  }
}

import { Context, Effect, Layer } from "effect"
import type { LocalApiClient, LocalApiOptions } from "./LocalApi.ts"

/**
 * The `LocalApi` service: makes clients of tailscaled's LocalAPI. In the main entry point, so every
 * binary provides it at its `main`; the client code (HTTP, the LocalAPI's schemas) is loaded at
 * the first call, so a binary that provides it but runs router mode does not pay for loading it.
 */
export class LocalApi extends Context.Service<LocalApi, {
  readonly client: (options: LocalApiOptions) => LocalApiClient
}>()("@containerscale/core/LocalApi") {
  /** Clients of real sockets. */
  static readonly layer: Layer.Layer<LocalApi> = Layer.sync(LocalApi, () => LocalApi.of({ client: lazyClient }))
}

let module: Promise<typeof import("./LocalApi.ts")> | undefined

const lazyClient = (options: LocalApiOptions): LocalApiClient => {
  let client: Promise<LocalApiClient> | undefined
  const load = Effect.promise(() => (client ??= (module ??= import("./LocalApi.ts")).then((m) => m.makeLocalApi(options))))
  const call = <K extends Exclude<keyof LocalApiClient, "socket">>(key: K): LocalApiClient[K] =>
    ((...args: Array<unknown>) => Effect.flatMap(load, (c) => (c[key] as (...a: Array<unknown>) => Effect.Effect<unknown, unknown, unknown>)(...args))) as LocalApiClient[K]
  return {
    socket: options.socket,
    status: call("status"),
    prefs: call("prefs"),
    editPrefs: call("editPrefs"),
    checkPrefs: call("checkPrefs"),
    start: call("start"),
    loginInteractive: call("loginInteractive"),
    logout: call("logout"),
    whois: call("whois"),
    watchIpnBus: call("watchIpnBus")
  }
}

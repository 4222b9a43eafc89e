import { startTestnet } from "@containerscale/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { startTailscaled } from "../../testing/src/tailscaled/harness.ts"
import { ensureTailscaledBinary, tailscaledBinary } from "../../sandbox/src/repo.ts"
import { makeLocalApi } from "../src/tailscale/LocalApi.ts"
import { backendStateOf, maskPrefs, newPrefs, NotifyWatchOpt } from "../src/tailscale/localApiSchemas.ts"

/** The client against the stand-in tailscaled and the testnet control server, in a temp dir. */

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "cs-localapi-standin-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

describe("LocalAPI client against the stand-in tailscaled", () => {
  it.live("brings a fresh daemon up with an auth key, bus first, and reads it back", () =>
    Effect.gen(function*() {
      yield* Effect.sync(() => ensureTailscaledBinary())
      const dir = yield* tempDir
      const testnet = yield* Effect.acquireRelease(
        Effect.promise(() => startTestnet({ stateDir: path.join(dir, "testnet") })),
        (t) => Effect.promise(() => t.close())
      )
      const daemon = yield* Effect.acquireRelease(
        Effect.promise(() =>
          startTailscaled({ binary: tailscaledBinary(), socket: path.join(dir, "tailscaled.sock"), state: "mem:", tun: "userspace-networking" })
        ),
        (d) => Effect.promise(() => d.stop())
      )
      const authKey = Redacted.make(yield* Effect.promise(() => testnet.createAuthKey({ tags: ["tag:container"] })))
      const client = makeLocalApi({ socket: daemon.socket, timeout: "5 seconds" })

      const before = yield* client.status()
      assert.strictEqual(before.BackendState, "NeedsLogin")
      assert.isFalse(before.HaveNodeKey)
      assert.isNull(before.CurrentTailnet)
      const current = yield* client.prefs()
      assert.isFalse(current.WantRunning)

      const bus = yield* client.watchIpnBus(NotifyWatchOpt.InitialState)
      const prefs = {
        ...newPrefs(),
        ControlURL: testnet.loginServer,
        WantRunning: true,
        Hostname: "lapi-standin",
        CorpDNS: false
      }
      yield* client.checkPrefs(prefs)
      yield* client.start({ authKey, updatePrefs: prefs })
      if (!before.HaveNodeKey) yield* client.loginInteractive()
      const seen = yield* bus.pipe(
        Stream.tap((n) => (n.ErrMessage != null ? Effect.die(new Error(n.ErrMessage)) : Effect.void)),
        Stream.takeUntil((n) => n.State === 6),
        Stream.runCollect,
        Effect.timeout("10 seconds")
      )
      const states = seen.flatMap((n) => (n.State == null ? [] : [backendStateOf(n.State)]))
      assert.strictEqual(states[0], "NeedsLogin")
      assert.strictEqual(states.at(-1), "Running")

      const after = yield* client.status({ peers: false })
      assert.strictEqual(after.BackendState, "Running")
      assert.isTrue(after.HaveNodeKey)
      assert.isAbove(after.Self.TailscaleIPs?.length ?? 0, 0)
      assert.match(after.Self.DNSName, /^lapi-standin\..+\.$/)
      assert.deepStrictEqual(after.Self.Tags, ["tag:container"])
      assert.isNotNull(after.CurrentTailnet)
      assert.isTrue(after.Self.DNSName.endsWith(`.${after.CurrentTailnet!.MagicDNSSuffix}.`))

      const who = yield* client.whois(after.Self.TailscaleIPs![0]!)
      assert.strictEqual(who?.Node.Name, after.Self.DNSName)

      const stopped = yield* client.editPrefs(maskPrefs({ WantRunning: false }))
      assert.isFalse(stopped.WantRunning)
      assert.strictEqual((yield* client.status({ peers: false })).BackendState, "Stopped")
      yield* client.logout()
      assert.strictEqual((yield* client.status({ peers: false })).BackendState, "NeedsLogin")
      assert.notInclude(daemon.logs(), Redacted.value(authKey))
    }), 60_000)
})

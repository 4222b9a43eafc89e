import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import type { MemberOptions, Spelling } from "../src/networkOptions.ts"
import { decodeStringOptions } from "../src/networkOptions.ts"
import { SSH_REFUSED } from "../src/tailscale/memberReach.ts"
import { resolveMemberSettings } from "../src/tailscale/memberSettings.ts"

/** Member mode refuses what would act on the node outside the container, before a daemon starts. */

const spelling: Spelling = { name: (o) => o, set: (o, v) => `${o}=${v}`, environment: "the test", reader: "the test" }
const attachment = { network: "net", containerId: "c1", ifname: "eth0", name: "web" }

const resolve = (options: MemberOptions) =>
  Effect.runSyncExit(resolveMemberSettings(options, attachment, {}, spelling, { withAuthKey: false }))

const refusal = (options: MemberOptions) => {
  const exit = resolve(options)
  if (Exit.isSuccess(exit)) return assert.fail(`${JSON.stringify(options)} was accepted`)
  return String(exit.cause)
}

describe("what a member's tailscaled may do", () => {
  it("refuses Tailscale SSH in every spelling, with the reason and what to use instead", () => {
    for (const options of [{ ssh: true }, { tailscaleFlags: ["--ssh"] }, { tailscaleFlags: ["-ssh=true"] }, { tailscaleFlags: ["--hostname", "x", "--ssh"] }]) {
      const message = refusal(options)
      assert.include(message, SSH_REFUSED, JSON.stringify(options))
      assert.include(message, "run an SSH server in the container", JSON.stringify(options))
    }
    const docker = Effect.runSyncExit(decodeStringOptions({ "containerscale.mode": "member", "containerscale.ssh": "true" }, {
      ...spelling,
      name: (o) => `containerscale.${o}`
    }))
    assert.isTrue(Exit.isFailure(docker))
    assert.include(String(Exit.isFailure(docker) ? docker.cause : ""), "option containerscale.ssh: Tailscale SSH is refused")
  })

  it("accepts SSH turned off, and never asks tailscaled for it", () => {
    for (const options of [{ ssh: false }, { tailscaleFlags: ["--ssh=false"] }, {}]) {
      const exit = resolve(options)
      assert.isTrue(Exit.isSuccess(exit), JSON.stringify(options))
      if (Exit.isSuccess(exit)) assert.notProperty(exit.value.prefs, "ssh")
    }
  })

  it("refuses the web client, which would let peers change the node's settings", () => {
    assert.include(refusal({ tailscaleFlags: ["--webclient"] }), "the web client is refused in member mode")
    assert.isTrue(Exit.isSuccess(resolve({ tailscaleFlags: ["--webclient=false"] })))
  })

  it("takes only the tailscaled flags that stay inside the container, in Go's flag forms", () => {
    const accepted = [["--verbose", "2"], ["-verbose=1"], ["--port=41641"], ["-debug", "127.0.0.1:8080"], ["--socks5-server=localhost:1080"], ["--no-logs-no-support"]]
    for (const tailscaledFlags of accepted) assert.isTrue(Exit.isSuccess(resolve({ tailscaledFlags })), tailscaledFlags.join(" "))
    const refused: ReadonlyArray<readonly [ReadonlyArray<string>, string]> = [
      [["--config=/etc/tailscale.json"], "can turn on Tailscale SSH"],
      [["-config", "/x"], "must not set -config"],
      [["--bird-socket", "/run/bird.ctl"], "BIRD"],
      [["--socket=/tmp/x.sock"], "containerscale sets it for each container"],
      [["-statedir", "/tmp/x"], "must not set -statedir"],
      [["--tun=x"], "userspace option"],
      [["--cleanup"], "cleans up and exits"],
      [["--encrypt-state"], "--encrypt-state is not supported; use --verbose, --port"],
      [["--verbose"], "--verbose needs a value"],
      [["verbose"], "is not a flag"]
    ]
    for (const [tailscaledFlags, says] of refused) assert.include(refusal({ tailscaledFlags }), says, tailscaledFlags.join(" "))
  })

  it("refuses a tailscaled under /run, which the daemon's private /run hides", () => {
    assert.include(refusal({ tailscaledPath: "/run/bin/tailscaled" }), "must not be under /run")
    assert.include(refusal({ tailscaledPath: "/var/run/../run/tailscaled" }), "must not be under /run")
    assert.isTrue(Exit.isSuccess(resolve({ tailscaledPath: "/runner/tailscaled" })))
  })
})

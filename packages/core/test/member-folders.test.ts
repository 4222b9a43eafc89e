import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { layerIproute2 } from "../src/netlink/iproute2.ts"
import type { Spelling } from "../src/networkOptions.ts"
import { memberRoot } from "../src/state.ts"
import { LocalApi } from "../src/tailscale/LocalApi.ts"
import { Member } from "../src/tailscale/Member.ts"
import type { MemberNetwork } from "../src/tailscale/memberNetwork.ts"
import { joinMember, leaveMember, listMembers, memberPaths } from "../src/tailscale/tailscaled.ts"

/**
 * Member folders that are symbolic links, another user's, or writable by others are refused, and
 * nothing is written, chmod-ed or removed through them: not by ADD (join), not by DEL (leave).
 * `status` names them.
 */

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-member-folders-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

const spelling: Spelling = { name: (o) => o, set: (o, v) => `"${o}": "${v}"`, environment: "env", reader: "the test" }
const layer = Member.layer.pipe(Layer.provide(Layer.mergeAll(layerIproute2, LocalApi.layer)))
const run = <A, E>(effect: Effect.Effect<A, E, Member | LocalApi>) =>
  Effect.runPromise(Effect.result(effect.pipe(Effect.provide(Layer.merge(layer, LocalApi.layer)))))

const withMember = <A, E>(f: (m: Member["Service"]) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    return yield* f(yield* Member)
  })

const NETWORK = "safenet"
const networkOf = (stateDir: string): MemberNetwork => ({
  options: { stateDir, tailscaledPath: "/bin/sh", userspace: true },
  env: {},
  spelling
})

const join = (stateDir: string, identity: string, containerId = "c1") =>
  run(joinMember({
    stateDir: memberRoot(stateDir),
    network: NETWORK,
    containerId,
    ifname: "eth0",
    netns: "/nonexistent/netns",
    identity,
    persistent: false,
    tailscaled: "/bin/sh",
    userspace: true,
    prefs: { hostname: identity },
    authKey: Redacted.make("hskey-auth-test"),
    timeout: "5 seconds"
  }))

/** Every file under `d` with its mode and content: what must not change. */
const snapshot = (d: string) =>
  Object.fromEntries((fs.readdirSync(d, { recursive: true }) as Array<string>).sort().map((f) => {
    const st = fs.lstatSync(path.join(d, f))
    return [f, `${(st.mode & 0o7777).toString(8)} ${st.uid} ${st.isFile() ? fs.readFileSync(path.join(d, f), "utf8") : ""}`]
  }).concat([[".", `${(fs.lstatSync(d).mode & 0o7777).toString(8)} ${fs.lstatSync(d).uid}`]]))

/** A folder elsewhere that looks like a member folder of container c1: what a link points DEL at. */
const lure = (name: string, identity: string) => {
  const target = path.join(dir, name)
  fs.mkdirSync(target, { mode: 0o755 })
  fs.chmodSync(target, 0o755)
  fs.writeFileSync(path.join(target, "attachment.json"), JSON.stringify({
    network: NETWORK, containerId: "c1", ifname: "eth0", netns: "/nonexistent/netns", identity, persistent: false,
    tailscaled: "/bin/sh", userspace: true, extraFlags: []
  }))
  fs.writeFileSync(path.join(target, "tailscaled.pid"), "1\n")
  fs.writeFileSync(path.join(target, "tailscaled.sock"), "")
  fs.writeFileSync(path.join(target, "precious"), "keep me")
  return target
}

const errorOf = (r: { _tag: string }) => (r as any).failure as { _tag: string; message: string }

describe("member folders", () => {
  it("a member folder that is a symbolic link: ADD refuses, DEL and GC do not follow it, status names it", async () => {
    const stateDir = path.join(dir, "s1")
    const root = memberRoot(stateDir)
    fs.mkdirSync(root, { recursive: true, mode: 0o700 })
    const identity = `${NETWORK}_web`
    const target = lure("elsewhere", identity)
    fs.symlinkSync(target, path.join(root, identity))
    assert.strictEqual(memberPaths(root, identity).dir, path.join(root, identity))
    const before = snapshot(target)

    const joined = await join(stateDir, identity)
    assert.strictEqual(joined._tag, "Failure")
    assert.strictEqual(errorOf(joined)._tag, "MemberFailure")
    assert.include(errorOf(joined).message, "symbolic link")
    assert.deepStrictEqual(snapshot(target), before, "ADD wrote to or chmod-ed the link's target")

    // DEL as the runtime sends it: found by the record (here: the lure behind the link)
    const left = await run(withMember((m) => m.leave(networkOf(stateDir), { network: NETWORK, containerId: "c1", ifname: "eth0" })))
    assert.strictEqual(left._tag, "Success")
    assert.isFalse((left as any).success, "DEL found a member behind the link")
    assert.deepStrictEqual(snapshot(target), before, "DEL removed files through the link")
    const gc = await run(withMember((m) => m.gc(networkOf(stateDir), NETWORK, [])))
    assert.strictEqual(gc._tag, "Success")
    assert.deepStrictEqual(snapshot(target), before, "GC removed files through the link")
    const leave = await run(leaveMember({ stateDir: root, identity, keepState: false }))
    assert.strictEqual(leave._tag, "Failure")
    assert.deepStrictEqual(snapshot(target), before, "leaveMember removed files through the link")
    assert.isTrue(fs.lstatSync(path.join(root, identity)).isSymbolicLink())
    assert.deepStrictEqual(listMembers(root), [])

    const status = await run(withMember((m) => m.status(networkOf(stateDir))))
    assert.strictEqual(status._tag, "Failure")
    assert.strictEqual(errorOf(status)._tag, "NotAvailable")
    assert.include(errorOf(status).message, `${path.join(root, identity)} is a symbolic link`)
  })

  it("a member root that is a symbolic link: ADD refuses and makes nothing in its target", async () => {
    const stateDir = path.join(dir, "s2")
    fs.mkdirSync(stateDir, { mode: 0o700 })
    const target = path.join(dir, "root-target")
    fs.mkdirSync(target, { mode: 0o755 })
    fs.symlinkSync(target, memberRoot(stateDir))
    const joined = await join(stateDir, `${NETWORK}_db`)
    assert.strictEqual(joined._tag, "Failure")
    assert.strictEqual(errorOf(joined)._tag, "InvalidNetworkConfig")
    assert.include(errorOf(joined).message, "symbolic link")
    assert.deepStrictEqual(fs.readdirSync(target), [])
    const status = await run(withMember((m) => m.status(networkOf(stateDir))))
    assert.include(errorOf(status).message, `${memberRoot(stateDir)} is a symbolic link`)
  })

  it("a member folder of another user, or writable by group or others: refused, left as it is", async () => {
    const stateDir = path.join(dir, "s3")
    const root = memberRoot(stateDir)
    fs.mkdirSync(root, { recursive: true, mode: 0o700 })
    const foreign = path.join(root, `${NETWORK}_foreign`)
    fs.mkdirSync(foreign, { mode: 0o700 })
    fs.chownSync(foreign, 4242, 4242)
    const open = path.join(root, `${NETWORK}_open`)
    fs.mkdirSync(open)
    fs.chmodSync(open, 0o777)
    const before = [snapshot(foreign), snapshot(open)]

    const a = await join(stateDir, `${NETWORK}_foreign`)
    assert.include(errorOf(a).message, "owned by uid 4242")
    const b = await join(stateDir, `${NETWORK}_open`, "c2")
    assert.include(errorOf(b).message, "writable by its group or others (mode 0777)")
    for (const id of ["foreign", "open"]) {
      const r = await run(leaveMember({ stateDir: root, identity: `${NETWORK}_${id}`, keepState: false }))
      assert.strictEqual(r._tag, "Failure")
    }
    assert.deepStrictEqual([snapshot(foreign), snapshot(open)], before)

    const status = await run(withMember((m) => m.status(networkOf(stateDir))))
    assert.include(errorOf(status).message, foreign)
    assert.include(errorOf(status).message, open)
  })

  it("a member root writable by others is refused", async () => {
    const stateDir = path.join(dir, "s4")
    fs.mkdirSync(memberRoot(stateDir), { recursive: true })
    fs.chmodSync(memberRoot(stateDir), 0o1777)
    const joined = await join(stateDir, `${NETWORK}_tmp`)
    assert.strictEqual(errorOf(joined)._tag, "InvalidNetworkConfig")
    assert.include(errorOf(joined).message, "writable by its group or others")
    assert.deepStrictEqual(fs.readdirSync(memberRoot(stateDir)), [])
  })
})

import { type Podman5Sandbox, podman5Sandbox, distBin, testingBin } from "@containerscale/sandbox"
import { listLinks, netnsScope, uniquePrefix } from "@containerscale/testing"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { promisify } from "node:util"

/**
 * containerscale-netavark under the real Podman 5 flow: podman 5.4 and netavark 1.14 from a cached
 * Debian trixie chroot (see `podmanChroot`; the first run on a machine builds it with debootstrap,
 * a few minutes), the plugin found through `netavark_plugin_dirs`, everything run inside a
 * throwaway node namespace. Podman does the IPAM and calls our `create`, netavark our
 * `setup`/`teardown`.
 */

const DRIVER = "containerscale-netavark"
const PLUGIN = path.join(distBin(), "containerscale-netavark")
const TAILSCALED = path.join(testingBin(), "tailscaled")
const TESTNET = path.join(testingBin(), "containerscale-testnet")
const execFileAsync = promisify(execFile)
const prefix = uniquePrefix()
const scope = netnsScope(`${prefix}-`)
const node = scope.create("node")
let pm: Podman5Sandbox | undefined

beforeAll(async () => {
  if (!fs.existsSync(PLUGIN)) {
    throw new Error(`${PLUGIN} is missing: build it with "cd packages/netavark && ../../scripts/compile-binary containerscale-netavark src/main.ts"`)
  }
  // the first run on a machine builds the chroot (debootstrap, 1.5-4 minutes); later runs find it cached
  pm = await podman5Sandbox({ prefix, plugins: { [DRIVER]: PLUGIN }, binaries: { tailscaled: TAILSCALED }, netns: node })
}, 1_200_000)

afterAll(async () => {
  const errors: Array<unknown> = []
  for (const f of [() => pm?.dispose(), () => scope.dispose()]) {
    try {
      await f()
    } catch (e) {
      errors.push(e)
    }
  }
  if (errors.length > 0) throw new AggregateError(errors, "podman e2e cleanup failed")
}, 60_000)

const sandbox = (): Podman5Sandbox => {
  if (pm === undefined) throw new Error("the podman sandbox was not set up")
  return pm
}

describe("containerscale-netavark under podman 5 (trixie chroot)", () => {
  it("router mode: network create, two containers reach each other, rm and network rm leave nothing", async () => {
    const p = sandbox()
    const net = `${prefix}-pr`
    const run = `podman run -d --cgroup-parent=${p.cgroupParent} --network ${net}`
    const script = `
      cleanup() { podman rm -f -t 0 -a >/dev/null 2>&1 || true; podman network rm -f ${net} >/dev/null 2>&1 || true; }
      trap cleanup EXIT
      echo "plugins: $(podman info --format '{{.Plugins.Network}}')"
      podman network create -d ${DRIVER} --subnet 10.239.60.0/24 -o mode=router -o state_dir=${p.paths.state} ${net} >/dev/null
      echo "options: $(podman network inspect -f '{{json .Options}}' ${net})"
      ${run} --name ${prefix}-a ${p.image} sleep 60 >/dev/null
      ${run} --name ${prefix}-b --ip 10.239.60.77 ${p.image} sleep 60 >/dev/null
      A=$(podman inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' ${prefix}-a)
      B=$(podman inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' ${prefix}-b)
      echo "a: $A"; echo "b: $B"
      echo "links-up: $(ip -o link show | grep -c ': cs' || true)"
      # podman exec is no use in a chroot (runc falls back from pivot_root, and exec then lands in
      # the host's root): ping from each container's netns with the chroot's busybox instead
      PA=$(podman inspect -f '{{.State.Pid}}' ${prefix}-a); PB=$(podman inspect -f '{{.State.Pid}}' ${prefix}-b)
      nsenter -t "$PA" -n busybox ping -c 1 -W 3 "$B" >&2 && echo "a->b: ok"
      nsenter -t "$PB" -n busybox ping -c 1 -W 3 "$A" >&2 && echo "b->a: ok"
      podman rm -f -t 0 ${prefix}-a ${prefix}-b >/dev/null
      echo "links-down: $(ip -o link show | grep -c ': cs' || true)"
      podman network rm ${net} >/dev/null
      echo "networks: $(podman network ls -q | grep -c ${prefix} || true)"
    `
    const r = await p.sh(script, { timeoutMs: 180_000 })
    assert.strictEqual(r.code, 0, r.stdout + r.stderr)
    const out = Object.fromEntries(r.stdout.trim().split("\n").map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1).trim()]))
    assert.include(out["plugins"], DRIVER)
    assert.strictEqual(JSON.parse(out["options"]!).mode, "router")
    assert.match(out["a"]!, /^10\.239\.60\.\d+$/)
    assert.strictEqual(out["b"], "10.239.60.77")
    assert.strictEqual(out["links-up"], "2")
    assert.strictEqual(out["a->b"], "ok", r.stderr)
    assert.strictEqual(out["b->a"], "ok", r.stderr)
    assert.strictEqual(out["links-down"], "0")
    assert.strictEqual(out["networks"], "0")
    assert.deepStrictEqual(listLinks(node, "cs"), [])
    assert.deepStrictEqual(listLinks(undefined, prefix), [])
  }, 240_000)

  it("a bad option fails podman network create with the plugin's message", async () => {
    const p = sandbox()
    const r = await p.sh(`podman network create -d ${DRIVER} --subnet 10.239.61.0/24 -o colour=blue ${prefix}-bad`, { timeoutMs: 60_000 })
    assert.notStrictEqual(r.code, 0)
    assert.include(r.stderr, `unknown option "colour"`)
    const ls = await p.sh(`podman network ls -q`)
    assert.notInclude(ls.stdout, `${prefix}-bad`)
  }, 120_000)

  it("member mode: each container joins the tailnet, they reach each other by tailnet address, rm logs them out", async () => {
    const p = sandbox()
    // the testnet runs outside the chroot, as its own process; its sockets are under the sandbox
    // dir, which podman sees at the same path
    const testnetState = path.join(p.paths.files, "testnet")
    const keyFile = path.join(p.paths.files, "auth-key")
    const { stdout } = await execFileAsync(TESTNET, ["up", "--state", testnetState], { timeout: 30_000 })
    const info = JSON.parse(stdout) as { loginServer: string; authKey: string; apiUrl: string; apiKey: string }
    const nodes = async () => {
      const res = await fetch(`${info.apiUrl}/api/v1/node`, { headers: { authorization: `Bearer ${info.apiKey}` } })
      return ((await res.json()) as any).nodes as Array<any>
    }
    try {
      fs.writeFileSync(keyFile, `${info.authKey}\n`, { mode: 0o600 })
      const net = `${prefix}-pm`
      const run = `podman run -d --cgroup-parent=${p.cgroupParent} --network ${net}`
      const opts = [
        "mode=member",
        `login_server=${info.loginServer}`,
        `auth_key_file=${keyFile}`,
        `tailscaled_path=${path.join(p.paths.bin, "tailscaled")}`,
        `state_dir=${p.paths.state}`,
        "timeout=20"
      ].map((o) => `-o ${o}`).join(" ")
      const script = `
        cleanup() { podman rm -f -t 0 -a >/dev/null 2>&1 || true; podman network rm -f ${net} >/dev/null 2>&1 || true; }
        trap cleanup EXIT
        podman network create -d ${DRIVER} --subnet 10.239.62.0/24 ${opts} ${net} >/dev/null
        ${run} --name ${prefix}-ma ${p.image} sleep 60 >/dev/null
        ${run} --name ${prefix}-mb ${p.image} sleep 60 >/dev/null
        PA=$(podman inspect -f '{{.State.Pid}}' ${prefix}-ma); PB=$(podman inspect -f '{{.State.Pid}}' ${prefix}-mb)
        TA=$(nsenter -t "$PA" -n busybox ip -4 -o addr show | awk '/ 100\./ {print $4}' | cut -d/ -f1)
        TB=$(nsenter -t "$PB" -n busybox ip -4 -o addr show | awk '/ 100\./ {print $4}' | cut -d/ -f1)
        echo "ta: $TA"; echo "tb: $TB"
        nsenter -t "$PA" -n busybox ping -c 1 -W 3 "$TB" >&2 && echo "a->b: ok"
        nsenter -t "$PB" -n busybox ping -c 1 -W 3 "$TA" >&2 && echo "b->a: ok"
        podman rm -f -t 0 ${prefix}-ma ${prefix}-mb >/dev/null
        podman network rm ${net} >/dev/null
      `
      // the testnet relays the packets: the script runs as a child process, this event loop stays free
      const r = await p.sh(script, { timeoutMs: 180_000 })
      assert.strictEqual(r.code, 0, r.stdout + r.stderr)
      const out = Object.fromEntries(r.stdout.trim().split("\n").map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1).trim()]))
      assert.match(out["ta"]!, /^100\.\d+\.\d+\.\d+$/, r.stdout + r.stderr)
      assert.match(out["tb"]!, /^100\.\d+\.\d+\.\d+$/)
      assert.notStrictEqual(out["ta"], out["tb"])
      assert.strictEqual(out["a->b"], "ok", r.stderr)
      assert.strictEqual(out["b->a"], "ok", r.stderr)
      assert.notInclude(r.stdout + r.stderr, info.authKey)
      assert.deepStrictEqual(await nodes(), []) // ephemeral nodes are deleted at logout
      assert.deepStrictEqual(listLinks(node, "cs"), [])
    } finally {
      await execFileAsync(TESTNET, ["down", "--state", testnetState], { timeout: 30_000 })
    }
  }, 240_000)
})

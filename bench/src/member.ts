import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { execTimed, heading, loadavg, machine, median, ms, note, percentile, repoRoot, table, tempDir } from "./common.ts"

/**
 * Member mode: the time from ADD's start to the plugin returning with the tailnet address,
 * against the stand-in tailscaled's own time from its start to Running (both from the same run:
 * the stand-in logs its state changes with timestamps). The difference is our overhead: plugin
 * start-up, spawning tailscaled in the namespace, waiting for its socket, the LocalAPI calls
 * (bus, start, login-interactive, status) and the result. ContainerScale slept a fixed second.
 */

const N = Number(process.env.BENCH_MEMBER ?? 20)
const ours = path.join(repoRoot, "dist/bin/containerscale")
const tailscaled = path.join(repoRoot, "dist/testing-bin/tailscaled")
// its own process: the plugin runs synchronously here, which would stall an in-process relay
const testnetCli = path.join(repoRoot, "dist/testing-bin/containerscale-testnet")
const prefix = `csm${process.pid}`
const made: Array<string> = []
const cleanup = () => {
  for (const name of made.splice(0)) {
    try {
      execFileSync("ip", ["netns", "del", name], { stdio: "ignore" })
    } catch {
      // already gone
    }
  }
}
process.on("exit", cleanup)

const stamp = (line: string | undefined) => (line === undefined ? Number.NaN : Date.parse(line.split(" ")[0]!))

console.log("# containerscale CNI plugin, member mode, with the stand-in tailscaled\n")
console.log(`${machine()}; ${N} ADD + DEL after 2 warm-ups`)
const dir = tempDir("member")
const testnetState = path.join(dir, "testnet")
const up = JSON.parse(execFileSync(testnetCli, ["up", "--state", testnetState], { encoding: "utf8" })) as { loginServer: string; authKey: string }
const key = up.authKey // reusable and ephemeral
const stateDir = path.join(dir, "state")
const rows = { add: [] as Array<number>, running: [] as Array<number>, overhead: [] as Array<number>, del: [] as Array<number> }
try {
  for (let i = -2; i < N; i++) {
    const name = `${prefix}-${i + 2}`
    execFileSync("ip", ["netns", "add", name])
    made.push(name)
    const netns = `/run/netns/${name}`
    const config = JSON.stringify({
      cniVersion: "1.0.0", name: "bench", type: "containerscale", loginServer: up.loginServer,
      tailscaledPath: tailscaled, stateDir, timeoutSeconds: 20,
      prevResult: { cniVersion: "1.0.0", interfaces: [{ name: "eth0", sandbox: netns }], ips: [] }
    })
    const env = (command: string) => ({
      PATH: process.env.PATH ?? "/usr/bin:/bin", CNI_COMMAND: command, CNI_CONTAINERID: `b${i + 2}`, CNI_NETNS: netns,
      CNI_IFNAME: "eth0", CNI_ARGS: "", CNI_PATH: "/usr/lib/cni", CONTAINERSCALE_AUTH_KEY: key
    })
    const add = execTimed(ours, [], env("ADD"), config)
    const log = fs.readFileSync(path.join(stateDir, "member", `bench_b${i + 2}`, "tailscaled.log"), "utf8").split("\n")
    // the stand-in logs when its process started (before its runtime loaded) and when it reached Running
    const started = Date.parse(/process started (\S+)/.exec(log.join("\n"))?.[1] ?? "")
    const running = stamp(log.find((l) => l.includes("-> Running"))) - started
    const del = execTimed(ours, [], env("DEL"), config)
    execFileSync("ip", ["netns", "del", name])
    made.splice(made.indexOf(name), 1)
    if (i < 0) continue
    rows.add.push(add.ms)
    rows.running.push(running)
    rows.overhead.push(add.ms - running)
    rows.del.push(del.ms)
  }
} finally {
  execFileSync(testnetCli, ["down", "--state", testnetState])
  cleanup()
  fs.rmSync(dir, { recursive: true, force: true })
}
heading("ADD to a Running tailnet node (ms)")
const row = (label: string, v: Array<number>) => [label, ms(median(v)), ms(percentile(v, 95))]
console.log(table(["what", "p50", "p95"], [
  row("ADD, exec to exit (the tailnet address in the result)", rows.add),
  row("stand-in tailscaled: its process start to Running (its log)", rows.running),
  row("our overhead (ADD minus the stand-in's time)", rows.overhead),
  row("DEL (logout, stop tailscaled, remove its folder)", rows.del)
]))
note(`\nContainerScale waits a fixed 1000 ms after starting tailscaled. member benchmark done (${loadavg()})`)

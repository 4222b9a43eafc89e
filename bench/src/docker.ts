import { type DockerDriver, type DockerSandbox, dockerSandbox, startDockerDriver } from "@containerscale/sandbox"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { elapsedMs, heading, loadavg, machine, median, ms, note, now, percentile, ratio, repoRoot, table, tempDir } from "./common.ts"

/**
 * `docker run --rm --network <net> image true` on a private dockerd 20.10, start to exit as the
 * client sees it: containerscale-docker in router mode (our NetworkDriver + IpamDriver) against
 * Docker's own user-defined `bridge` network with its default IPAM, on the same daemon, and
 * `--network none` as the floor. dockerd runs with --bridge=none --iptables=false (no default
 * bridge, no NAT rules), which leaves user-defined bridge networks working. dockerd and the driver
 * both run inside a throwaway namespace that stands for the node, so the host is untouched.
 */

const N = Number(process.env.BENCH_DOCKER ?? 15)
const WARMUP = 3
const binary = path.join(repoRoot, "dist/bin/containerscale-docker")
const prefix = `csd${process.pid}`
const nodeNs = `${prefix}-node`
let nodeMade = false
let sandbox: DockerSandbox | undefined
let driver: DockerDriver | undefined

const removeNode = () => {
  if (!nodeMade) return
  nodeMade = false
  try {
    execFileSync("ip", ["netns", "del", nodeNs], { stdio: "ignore" })
  } catch {
    // already gone
  }
}
process.on("exit", removeNode)

const cleanup = async () => {
  // containers and networks go with the sandbox (the driver must still answer), then the driver
  try {
    await sandbox?.dispose()
  } catch (e) {
    console.error(`docker sandbox cleanup: ${String(e)}`)
  }
  sandbox = undefined
  try {
    await driver?.dispose()
  } catch (e) {
    console.error(`driver cleanup: ${String(e)}`)
  }
  driver = undefined
  removeNode()
}
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.prependListener(signal, () => {
    void cleanup().finally(() => process.exit(130))
  })
}

interface Candidate {
  readonly label: string
  readonly network: string
}

const main = async () => {
  if (!fs.existsSync(binary)) {
    console.error(`${binary} is missing: npm run build (or cd packages/docker && ../../scripts/compile-binary containerscale-docker src/main.ts)`)
    process.exit(1)
  }
  console.log("# containerscale-docker (router mode) vs Docker's bridge network, docker run --rm true\n")
  console.log(`${machine()}; ${N} runs per network, interleaved, after ${WARMUP} warm-ups each`)
  execFileSync("ip", ["netns", "add", nodeNs])
  nodeMade = true
  execFileSync("ip", ["-n", nodeNs, "link", "set", "lo", "up"])
  const node = `/run/netns/${nodeNs}`
  const dir = tempDir("docker")
  sandbox = await dockerSandbox({ prefix, netns: node })
  driver = await startDockerDriver({
    name: `${prefix}drv`,
    socketDir: path.join(dir, "sock"),
    stateDir: path.join(dir, "state"),
    netns: node,
    binary
  })
  const s = sandbox
  const version = s.docker(["version", "--format", "{{.Server.Version}}"]).trim()
  s.docker(["network", "create", "-d", driver.name, "--ipam-driver", driver.name, "--subnet", "10.237.200.0/24", `${prefix}-ours`])
  s.docker(["network", "create", "-d", "bridge", "--subnet", "10.237.201.0/24", "-o", `com.docker.network.bridge.name=${prefix}br`, `${prefix}-bridge`])
  const candidates: ReadonlyArray<Candidate> = [
    { label: "containerscale-docker (router)", network: `${prefix}-ours` },
    { label: "bridge (Docker's own)", network: `${prefix}-bridge` },
    { label: "none (no network)", network: "none" }
  ]
  // both networks really connect: the container's eth0 has an address and reaches the gateway
  for (const c of candidates.slice(0, 2)) {
    const out = s.docker(["run", "--rm", "--network", c.network, s.image, "sh", "-c",
      "ip -o -4 addr show eth0 && ping -c1 -W3 $(ip -4 route | awk '/default/ {print $3}') >/dev/null && echo reached"])
    if (!out.includes("reached")) throw new Error(`${c.label}: the container did not reach its gateway:\n${out}`)
  }
  const times = new Map(candidates.map((c) => [c, [] as Array<number>]))
  for (let i = -WARMUP; i < N; i++) {
    for (const c of candidates) {
      const t0 = now()
      s.docker(["run", "--rm", "--network", c.network, s.image, "true"])
      const t = elapsedMs(t0)
      if (i >= 0) times.get(c)!.push(t)
    }
  }
  const [ours, bridge, none] = candidates.map((c) => times.get(c)!)
  heading(`docker run --rm --network NET image true, client start to exit (ms; dockerd ${version})`)
  console.log(table(
    ["network", "p50", "p95", "min", "max", "p50 vs bridge", "p50 over none"],
    candidates.map((c) => {
      const t = times.get(c)!
      return [c.label, ms(median(t)), ms(percentile(t, 95)), ms(Math.min(...t)), ms(Math.max(...t)),
        ratio(median(t), median(bridge!)), ms(median(t) - median(none!))]
    })
  ))
  note(`\nours / bridge: p50 ${ratio(median(ours!), median(bridge!))}, p95 ${ratio(percentile(ours!, 95), percentile(bridge!, 95))}; ` +
    `network cost over --network none: ours ${ms(median(ours!) - median(none!))} ms, bridge ${ms(median(bridge!) - median(none!))} ms`)
  await cleanup()
  console.log(`\ndocker benchmark done (${loadavg()})`)
}

main().catch(async (e) => {
  console.error(e)
  await cleanup()
  process.exit(1)
})

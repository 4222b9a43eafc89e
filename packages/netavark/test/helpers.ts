import { distBin } from "@containerscale/sandbox"
import { spawn } from "node:child_process"
import * as path from "node:path"

/** The compiled plugin, run the way netavark runs it: argv, JSON on stdin, JSON on stdout. */
export const BIN = path.join(distBin(), "containerscale-netavark")

export interface Outcome {
  readonly exitCode: number | null
  readonly stdout: string
  readonly stderr: string
  readonly json: any
}

/** Runs the plugin (inside `node`'s namespace when given) without blocking the event loop. */
export const runPlugin = (
  args: ReadonlyArray<string>,
  input: object | string | undefined,
  options: { readonly node?: string; readonly env?: Record<string, string> } = {}
): Promise<Outcome> =>
  new Promise((resolve, reject) => {
    const [file, argv] = options.node === undefined
      ? [BIN, [...args]]
      : ["nsenter", [`--net=/run/netns/${options.node}`, "--", BIN, ...args]]
    const child = spawn(file, argv, {
      env: { PATH: process.env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin", ...options.env },
      stdio: ["pipe", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr += d))
    child.on("error", reject)
    child.on("close", (exitCode) => {
      let json: unknown
      try {
        json = stdout.trim() === "" ? undefined : JSON.parse(stdout)
      } catch {
        json = undefined
      }
      resolve({ exitCode, stdout, stderr, json })
    })
    child.stdin.on("error", () => {})
    child.stdin.end(input === undefined ? "" : typeof input === "string" ? input : JSON.stringify(input))
  })

export const NET_ID = "c5".repeat(32)

/** A network as netavark < 2.0 passes it: absent optional fields as null. */
export const network = (options: Record<string, string> | null, subnet = "10.237.1.0/24", gateway = "10.237.1.1") => ({
  name: "csnet",
  id: NET_ID,
  driver: "containerscale-netavark",
  network_interface: null,
  subnets: [{ subnet, gateway, lease_range: null }],
  routes: null,
  ipv6_enabled: false,
  internal: false,
  dns_enabled: false,
  network_dns_servers: null,
  labels: null,
  created: null,
  options,
  ipam_options: { driver: "host-local" }
})

/** The `setup`/`teardown` stdin: what netavark passes the plugin. */
export const call = (containerId: string, name: string | null, net: object, staticIps: Array<string> | null, ifname = "eth0") => ({
  container_id: containerId.padEnd(64, "0"),
  container_name: name,
  port_mappings: null,
  network: net,
  network_options: { aliases: null, interface_name: ifname, static_ips: staticIps, static_mac: null, options: null }
})

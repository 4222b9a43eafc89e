/**
 * What a member's tailscaled may do on the node. It shares only the container's network
 * namespace: its files, processes and host name are the node's. So every tailscaled feature that
 * acts on files or processes for a tailnet peer is refused here, before a daemon starts, and the
 * daemon itself runs in a mount namespace where only its own folder is writable (`tailscaled.ts`).
 */

/** Why member mode refuses Tailscale SSH, and what to use instead. */
export const SSH_REFUSED = "Tailscale SSH is refused in member mode: the container's tailscaled shares only its network " +
  "namespace, so an SSH session would run as root on the node, outside the container. To reach a shell in the " +
  "container over the tailnet, run an SSH server in the container (it answers on the container's tailnet address), " +
  "or run tailscale with --ssh inside the container's image"

/** `tailscale up` flags that member mode refuses, with the reason. */
export const REFUSED_TAILSCALE_FLAGS: Readonly<Record<string, string>> = {
  ssh: SSH_REFUSED,
  webclient: "the web client is refused in member mode: it lets tailnet peers change the node's settings, " +
    "Tailscale SSH included"
}

/**
 * tailscaled flags a network may add, and whether each takes a value. The others are refused:
 * containerscale sets `--socket`, `--state`, `--statedir` and `--tun` itself, and the rest act
 * outside the container.
 */
const DAEMON_FLAGS: Readonly<Record<string, "value" | "bool">> = {
  "verbose": "value",
  "port": "value",
  "debug": "value",
  "socks5-server": "value",
  "outbound-http-proxy-listen": "value",
  "no-logs-no-support": "bool"
}

const DAEMON_FLAG_REASONS: Readonly<Record<string, string>> = {
  socket: "containerscale sets it for each container",
  state: "containerscale sets it for each container",
  statedir: "containerscale sets it for each container",
  tun: "containerscale sets it for each container (use the userspace option for userspace networking)",
  config: "a config file can turn on Tailscale SSH, the web client and serve handlers, which act on the node outside the container",
  "bird-socket": "it would drive a BIRD routing daemon of the node",
  cleanup: "it cleans up and exits",
  "hardware-attestation": "it binds the node identity to the node's TPM"
}

/** Why `flags` (tailscaled's, in Go's `-name`, `--name`, `--name=value`, `--name value` forms) cannot be used, if they cannot. */
export const tailscaledFlagsProblem = (flags: ReadonlyArray<string>, option: string): string | undefined => {
  for (let i = 0; i < flags.length; i++) {
    const m = /^--?([a-z0-9-]+)(=.*)?$/.exec(flags[i]!)
    if (m === null) return `${option}: "${flags[i]}" is not a flag`
    const name = m[1]!
    const reason = DAEMON_FLAG_REASONS[name]
    if (reason !== undefined) return `${option} must not set ${flags[i]}: ${reason}`
    const kind = DAEMON_FLAGS[name]
    if (kind === undefined) {
      return `${option}: ${flags[i]} is not supported; use ${Object.keys(DAEMON_FLAGS).map((f) => `--${f}`).join(", ")}`
    }
    if (kind === "value" && m[2] === undefined && ++i >= flags.length) return `${option}: ${flags[i - 1]} needs a value`
  }
  return undefined
}

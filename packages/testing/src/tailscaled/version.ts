/** The version the stand-in reports (`Tailscale-Version`, `Status.Version`, `Notify.Version`). */
export const VERSION = "1.102.5-containerscale-standin"

/** The Tailscale capability version sent as `Tailscale-Cap`. */
export const CAPABILITY_VERSION = 142

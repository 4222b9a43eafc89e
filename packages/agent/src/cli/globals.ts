/** The flags every containerscalectl command takes. */
export interface GlobalOptions {
  readonly stateDir: string
  readonly cniConfDir: string
  readonly cniBinDir: string
  readonly tailscaledSocket: string
  readonly json: boolean
}

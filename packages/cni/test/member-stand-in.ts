import { netnsScope, processesWith, startTestnet, type Testnet } from "@containerscale/testing"
import { distBin, testingBin } from "@containerscale/sandbox"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

/**
 * What the member-mode tests of the compiled plugin share: a node namespace, a state directory,
 * copies of the plugin and the stand-in tailscaled (so a build running meanwhile, which replaces
 * dist/, cannot fail an exec), the stand-in control server and a key. Not a test file itself.
 */
export interface MemberStandIn {
  readonly scope: ReturnType<typeof netnsScope>
  readonly node: string
  readonly dir: string
  readonly stateDir: string
  /** the member folders' root */
  readonly members: string
  readonly bin: string
  readonly tailscaled: string
  readonly testnet: Testnet
  readonly key: string
  /** our tailscaled processes, at any stage of their start (nsenter, unshare, sh, tailscaled) */
  readonly daemons: () => ReadonlyArray<number>
  /** kills what is left of ours, stops the control server, removes the namespaces and the folder */
  readonly close: (alsoKill?: ReadonlyArray<number>) => Promise<void>
}

export const startMemberStandIn = async (name: string, key: { readonly ephemeral: boolean }): Promise<MemberStandIn> => {
  const scope = netnsScope()
  const node = scope.create("node")
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `cs-${name}-`))
  const stateDir = path.join(dir, "state")
  const bin = path.join(dir, "containerscale")
  const tailscaled = path.join(dir, "tailscaled")
  fs.copyFileSync(path.join(distBin(), "containerscale"), bin)
  fs.copyFileSync(path.join(testingBin(), "tailscaled"), tailscaled)
  fs.chmodSync(bin, 0o755)
  fs.chmodSync(tailscaled, 0o755)
  const testnet = await startTestnet({ stateDir: path.join(dir, "testnet") })
  const daemons = () => processesWith(`--socket=${stateDir}/`)
  return {
    scope,
    node,
    dir,
    stateDir,
    members: path.join(stateDir, "member"),
    bin,
    tailscaled,
    testnet,
    key: await testnet.createAuthKey({ reusable: true, ephemeral: key.ephemeral }),
    daemons,
    close: async (alsoKill = []) => {
      for (const pid of [...alsoKill, ...daemons()]) {
        try {
          process.kill(pid, "SIGKILL")
        } catch {
          // gone
        }
      }
      await testnet.close()
      scope.dispose()
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
}

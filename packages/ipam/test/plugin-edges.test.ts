import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { attachmentEnv, expectError, expectSuccess, netConf, requireBinary, runPlugin } from "./support.ts"

/** Requests that must be refused or must leave no trace. */

let root: string
beforeAll(() => {
  requireBinary()
  root = fs.mkdtempSync(path.join(os.tmpdir(), "cs-ipam-edges-"))
})
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))

const fresh = () => fs.mkdtempSync(path.join(root, "d"))

describe("edges of the IPAM plugin", () => {
  it("a requested address whose prefix does not match its subnet is refused with 102", async () => {
    const dataDir = fresh()
    const conf = JSON.stringify(netConf({ dataDir, ranges: [[{ subnet: "10.78.0.0/24" }]] }))
    const refused = expectError(
      await runPlugin(attachmentEnv("ADD", "c1", "eth0", { CNI_ARGS: "IP=10.78.0.50/8" }), conf),
      "ADD with a mismatched prefix"
    )
    assert.strictEqual(refused.code, 102)
    assert.include(refused.msg, "10.78.0.0/24")
    const taken = expectSuccess(await runPlugin(attachmentEnv("ADD", "c1", "eth0", { CNI_ARGS: "IP=10.78.0.50/24" }), conf), "ADD")
    assert.strictEqual(taken.ips[0].address, "10.78.0.50/24")
  })

  it("DEL, CHECK-free reads and GC of a network never used create nothing on disk", async () => {
    const dataDir = fresh()
    const conf = JSON.stringify(netConf({ dataDir }))
    assert.strictEqual((await runPlugin(attachmentEnv("DEL", "c1"), conf)).exitCode, 0)
    const gc = JSON.stringify({ ...netConf({ dataDir }), "cni.dev/valid-attachments": [] })
    assert.strictEqual((await runPlugin({ CNI_COMMAND: "GC", CNI_PATH: "/opt/cni/bin" }, gc)).exitCode, 0)
    assert.deepStrictEqual(fs.readdirSync(dataDir), [])
  })

  it("DEL of a config without an ipam section succeeds and writes nothing", async () => {
    const conf = JSON.stringify({ cniVersion: "1.0.0", name: "noipam", type: "bridge" })
    const run = await runPlugin(attachmentEnv("DEL", "c1"), conf)
    assert.strictEqual(run.exitCode, 0, run.stdout)
    assert.strictEqual(run.stdout, "")
    assert.isFalse(fs.existsSync("/var/lib/containerscale/ipam/noipam"))
  })

  it("ignores a .env file in the runtime's working directory", async () => {
    const dataDir = fresh()
    const cwd = fresh()
    fs.writeFileSync(path.join(cwd, ".env"), "CNI_ARGS=IP=10.79.0.99\n")
    const conf = JSON.stringify(netConf({ dataDir, ranges: [[{ subnet: "10.79.0.0/24" }]] }))
    const env = attachmentEnv("ADD", "c1")
    delete env.CNI_ARGS
    const result = expectSuccess(await runPlugin(env, conf, cwd), "ADD")
    assert.strictEqual(result.ips[0].address, "10.79.0.2/24")
  })
})

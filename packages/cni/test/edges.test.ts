import { distBin } from "@containerscale/sandbox"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { makeMemberMemory } from "@containerscale/core/memory"
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { memberPlugin } from "../src/member.ts"
import { runSkel } from "../src/skel.ts"

/** Input at the edge of the CNI skel that must be refused with the right code, changing nothing. */

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-cni-edges-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))
const ipam = path.join(distBin(), "containerscale-ipam")

/** Runs the IPAM plugin through bash, so that the environment can carry bytes that are not UTF-8. */
const runIpam = (envAssignments: string, config: object) => {
  const file = path.join(dir, "config.json")
  fs.writeFileSync(file, JSON.stringify(config))
  try {
    return { code: 0, out: execFileSync("bash", ["-c", `${envAssignments} CNI_PATH=/opt/cni/bin exec ${ipam} < ${file}`], { encoding: "utf8" }) }
  } catch (e) {
    return { code: (e as { status: number }).status, out: String((e as { stdout: string }).stdout) }
  }
}

const ipamConfig = (name: string) => ({
  cniVersion: "1.1.0",
  name,
  type: "containerscale-ipam",
  ipam: { type: "containerscale-ipam", dataDir: path.join(dir, "ipam"), ranges: [[{ subnet: "10.211.0.0/24" }]] }
})

describe("the CNI edge refuses what it cannot keep apart", () => {
  it("an interface name that is not UTF-8 (two such names would read alike): code 4, no store", () => {
    for (const byte of ["\\xff", "\\xfe"]) {
      const r = runIpam(`CNI_COMMAND=ADD CNI_CONTAINERID=c1 CNI_NETNS=/x CNI_IFNAME=$'${byte}'`, ipamConfig("edges"))
      assert.strictEqual(r.code, 1, r.out)
      assert.strictEqual(JSON.parse(r.out).code, 4, r.out)
      assert.include(JSON.parse(r.out).msg, "not valid UTF-8")
    }
    assert.isFalse(fs.existsSync(path.join(dir, "ipam")))
  })

  it("a network name longer than a file name: code 7, no store", () => {
    const r = runIpam("CNI_COMMAND=ADD CNI_CONTAINERID=c1 CNI_NETNS=/x CNI_IFNAME=eth0", ipamConfig("n".repeat(300)))
    assert.strictEqual(JSON.parse(r.out).code, 7, r.out)
    assert.include(JSON.parse(r.out).msg, "at most 255")
    assert.isFalse(fs.existsSync(path.join(dir, "ipam")))
  })

  it.effect("member mode refuses a CNI error object as prevResult, and joins nothing", () => {
    const memory = makeMemberMemory()
    return Effect.gen(function*() {
      const out = yield* runSkel(memberPlugin, {
        env: { CNI_COMMAND: "ADD", CNI_CONTAINERID: "c1", CNI_IFNAME: "eth0", CNI_NETNS: "/var/run/netns/x", CNI_PATH: "/opt/cni/bin" },
        stdin: JSON.stringify({
          cniVersion: "1.1.0",
          name: "edges",
          type: "containerscale",
          authKey: "k",
          prevResult: { cniVersion: "1.1.0", code: 7, msg: "the previous plugin failed" }
        })
      })
      assert.strictEqual(JSON.parse(out.stdout).code, 7, out.stdout)
      assert.strictEqual(memory.tailnet.nodes.size, 0)
    }).pipe(Effect.provide(memory.layer))
  })
})

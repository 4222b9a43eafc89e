import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import {
  attachmentEnv,
  type CniEnv,
  expectError,
  expectSuccess,
  netConf,
  cleanup,
  requireBinary,
  runPlugin,
  snapshot,
  storeAllocations
} from "./support.ts"

/**
 * The CNI conformance items that apply to an IPAM plugin (specs/cni.md sections 2, 3, 9, 11, 13),
 * run against the real single-file binary.
 */

let root: string
beforeAll(() => {
  requireBinary()
  root = fs.mkdtempSync(path.join(os.tmpdir(), "cs-ipam-bin-"))
})
afterAll(() => cleanup(root))
const newDataDir = () => fs.mkdtempSync(path.join(root, "d"))

const ALL_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] as const
const json = (o: unknown) => JSON.stringify(o)
const ips = (result: { ips: ReadonlyArray<{ address: string }> }) => result.ips.map((i) => i.address.split("/")[0])

describe.concurrent("VERSION", () => {
  it("needs only CNI_COMMAND and prints the supported versions, echoing cniVersion", async () => {
    const run = await runPlugin({ CNI_COMMAND: "VERSION" }, json({ cniVersion: "1.1.0" }))
    const out = expectSuccess(run, "VERSION")
    assert.strictEqual(out.cniVersion, "1.1.0")
    for (const v of ALL_VERSIONS) assert.include(out.supportedVersions, v)
  })

  it("works as libcni probes it (dummy NETNS/IFNAME/PATH)", async () => {
    const run = await runPlugin(
      { CNI_COMMAND: "VERSION", CNI_NETNS: "dummy", CNI_IFNAME: "dummy", CNI_PATH: "dummy" },
      json({ cniVersion: "1.0.0" })
    )
    const out = expectSuccess(run, "VERSION")
    assert.strictEqual(out.cniVersion, "1.0.0")
    assert.deepStrictEqual(Object.keys(out).sort(), ["cniVersion", "supportedVersions"])
  })

  it("answers even with an empty stdin", async () => {
    const out = expectSuccess(await runPlugin({ CNI_COMMAND: "VERSION" }, ""), "VERSION")
    for (const v of ALL_VERSIONS) assert.include(out.supportedVersions, v)
    assert.isString(out.cniVersion)
  })
})

describe.concurrent("ADD answers in the version asked", () => {
  for (const version of ALL_VERSIONS) {
    it(`cniVersion ${version}`, async () => {
      const dataDir = newDataDir()
      const conf = netConf({
        cniVersion: version,
        dataDir,
        ranges: [[{ subnet: "10.78.0.0/24" }], [{ subnet: "fd00:78::/64" }]],
        ipam: { routes: [{ dst: "0.0.0.0/0" }, { dst: "::/0", gw: "fd00:78::1" }] }
      })
      const run = await runPlugin(attachmentEnv("ADD", "ctr1"), json(conf))
      const result = expectSuccess(run, `ADD ${version}`)
      assert.strictEqual(result.cniVersion, version)
      assert.notProperty(result, "interfaces")
      const legacy = version < "1.0.0"
      assert.deepStrictEqual(
        result.ips,
        legacy
          ? [
            { version: "4", address: "10.78.0.2/24", gateway: "10.78.0.1" },
            { version: "6", address: "fd00:78::2/64", gateway: "fd00:78::1" }
          ]
          : [
            { address: "10.78.0.2/24", gateway: "10.78.0.1" },
            { address: "fd00:78::2/64", gateway: "fd00:78::1" }
          ]
      )
      assert.deepStrictEqual(result.routes, [{ dst: "0.0.0.0/0" }, { dst: "::/0", gw: "fd00:78::1" }])
      // a repeated ADD for the same attachment gets the same answer
      const again = expectSuccess(await runPlugin(attachmentEnv("ADD", "ctr1"), json(conf)), "second ADD")
      assert.deepStrictEqual(again, result)
    })
  }

  it("requested addresses from CNI_ARGS IP=, args.cni.ips and runtimeConfig.ips are honoured", async () => {
    const dataDir = newDataDir()
    const conf = netConf({ cniVersion: "1.0.0", dataDir, ranges: [[{ subnet: "10.80.0.0/24" }], [{ subnet: "fd00:80::/120" }]] })
    const a = expectSuccess(
      await runPlugin(attachmentEnv("ADD", "a", "eth0", { CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.80.0.50" }), json(conf)),
      "ADD IP="
    )
    assert.deepStrictEqual(ips(a), ["10.80.0.50", "fd00:80::2"])
    const b = expectSuccess(
      await runPlugin(attachmentEnv("ADD", "b"), json({ ...conf, args: { cni: { ips: ["10.80.0.60/24", "fd00:80::60"] } } })),
      "ADD args.cni.ips"
    )
    assert.deepStrictEqual(ips(b), ["10.80.0.60", "fd00:80::60"])
    const c = expectSuccess(
      await runPlugin(attachmentEnv("ADD", "c"), json({ ...conf, runtimeConfig: { ips: ["fd00:80::70"] } })),
      "ADD runtimeConfig.ips"
    )
    assert.deepStrictEqual(ips(c), ["10.80.0.61", "fd00:80::70"])
  })
})

describe.concurrent("bad input: an error object on stdout, a non-zero exit, and the store unchanged", () => {
  /** a data directory holding one attachment ("base" has 10.77.0.2); each case works on its own copy */
  let template: string
  const baseConf = (dataDir: string) => netConf({ cniVersion: "1.0.0", dataDir, ranges: [[{ subnet: "10.77.0.0/24" }]] })
  beforeAll(async () => {
    template = newDataDir()
    const r = expectSuccess(await runPlugin(attachmentEnv("ADD", "base"), json(baseConf(template))), "setup ADD")
    assert.deepStrictEqual(ips(r), ["10.77.0.2"])
  })

  interface Case {
    readonly name: string
    readonly env: CniEnv
    /** the config on stdin: a change to the base config, or the raw text */
    readonly conf?: (base: Record<string, unknown>) => unknown
    readonly stdin?: string
    readonly code: number
    /** words the message (msg or details) must hold */
    readonly mentions?: ReadonlyArray<string>
  }

  const add = (id = "newctr", ifname = "eth0", extra: CniEnv = {}) => attachmentEnv("ADD", id, ifname, extra)
  const ipamWith = (patch: Record<string, unknown>) => (b: Record<string, unknown>) => ({ ...b, ipam: { ...(b.ipam as object), ...patch } })
  const without = (...keys: ReadonlyArray<string>) => (b: Record<string, unknown>) =>
    Object.fromEntries(Object.entries(b).filter(([k]) => !keys.includes(k)))

  const cases: ReadonlyArray<Case> = [
    // environment
    { name: "no CNI_COMMAND", env: {}, code: 4, mentions: ["CNI_COMMAND"] },
    { name: "empty CNI_COMMAND", env: { ...add(), CNI_COMMAND: "" }, code: 4, mentions: ["CNI_COMMAND"] },
    { name: "unknown CNI_COMMAND", env: { ...add(), CNI_COMMAND: "FROB" }, code: 4, mentions: ["FROB"] },
    { name: "lower-case command", env: { ...add(), CNI_COMMAND: "add" }, code: 4 },
    { name: "ADD without CNI_CONTAINERID", env: { ...add(), CNI_CONTAINERID: undefined }, code: 4, mentions: ["CNI_CONTAINERID"] },
    { name: "ADD with an empty CNI_CONTAINERID", env: { ...add(), CNI_CONTAINERID: "" }, code: 4, mentions: ["CNI_CONTAINERID"] },
    { name: "ADD without CNI_IFNAME", env: { ...add(), CNI_IFNAME: undefined }, code: 4, mentions: ["CNI_IFNAME"] },
    { name: "ADD without CNI_NETNS", env: { ...add(), CNI_NETNS: undefined }, code: 4, mentions: ["CNI_NETNS"] },
    {
      name: "ADD without all three",
      env: { CNI_COMMAND: "ADD", CNI_PATH: "/opt/cni/bin" },
      code: 4,
      mentions: ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"]
    },
    { name: "DEL without CNI_CONTAINERID", env: { ...attachmentEnv("DEL", "base"), CNI_CONTAINERID: undefined }, code: 4, mentions: ["CNI_CONTAINERID"] },
    { name: "DEL without CNI_IFNAME", env: { ...attachmentEnv("DEL", "base"), CNI_IFNAME: "" }, code: 4, mentions: ["CNI_IFNAME"] },
    { name: "CHECK without CNI_NETNS", env: { ...attachmentEnv("CHECK", "base"), CNI_NETNS: "" }, code: 4, mentions: ["CNI_NETNS"] },
    { name: "CNI_ARGS that is not KEY=VALUE", env: add("newctr", "eth0", { CNI_ARGS: "IgnoreUnknown=1;IP" }), code: 4, mentions: ["CNI_ARGS"] },
    ...["abcdefghijklmnop", ".", "..", "a/b", "a:b", "a b", "a\tb"].map((ifname): Case => ({
      name: `ADD with ifname ${JSON.stringify(ifname)}`,
      env: add("newctr", ifname),
      code: 4,
      mentions: ["interface name"]
    })),
    { name: "DEL with a bad ifname", env: attachmentEnv("DEL", "base", "a/b"), code: 4, mentions: ["interface name"] },
    ...["-abc", ".abc", "a b", "a/b", "a:b", "ctr\u00e9"].map((id): Case => ({
      name: `ADD with container id ${JSON.stringify(id)}`,
      env: add(id),
      code: 4,
      mentions: ["container id"]
    })),
    { name: "DEL with a bad container id", env: attachmentEnv("DEL", "../base"), code: 4, mentions: ["container id"] },
    // decoding
    { name: "malformed JSON", env: add(), stdin: "{\"cniVersion\": \"1.0.0\",", code: 6 },
    { name: "empty stdin", env: add(), stdin: "", code: 6 },
    { name: "a JSON number", env: add(), stdin: "42", code: 6 },
    { name: "a JSON string", env: add(), stdin: "\"x\"", code: 6 },
    // versions
    { name: "unknown cniVersion 9.9.9", env: add(), conf: (b) => ({ ...b, cniVersion: "9.9.9" }), code: 1, mentions: ["9.9.9"] },
    { name: "cniVersion 0.2.0", env: add(), conf: (b) => ({ ...b, cniVersion: "0.2.0" }), code: 1 },
    { name: "no cniVersion", env: add(), conf: without("cniVersion"), code: 1 },
    { name: "DEL with unknown cniVersion", env: attachmentEnv("DEL", "base"), conf: (b) => ({ ...b, cniVersion: "9.9.9" }), code: 1 },
    { name: "CHECK with 0.3.1", env: attachmentEnv("CHECK", "base"), conf: (b) => ({ ...b, cniVersion: "0.3.1" }), code: 1, mentions: ["CHECK"] },
    { name: "CHECK with 0.3.0", env: attachmentEnv("CHECK", "base"), conf: (b) => ({ ...b, cniVersion: "0.3.0" }), code: 1 },
    { name: "GC with 1.0.0", env: { CNI_COMMAND: "GC", CNI_PATH: "/opt/cni/bin" }, conf: (b) => ({ ...b, "cni.dev/valid-attachments": [] }), code: 1, mentions: ["GC"] },
    { name: "GC with 0.4.0", env: { CNI_COMMAND: "GC", CNI_PATH: "/opt/cni/bin" }, conf: (b) => ({ ...b, cniVersion: "0.4.0", "cni.dev/valid-attachments": [] }), code: 1 },
    { name: "STATUS with 1.0.0", env: { CNI_COMMAND: "STATUS", CNI_PATH: "/opt/cni/bin" }, code: 1, mentions: ["STATUS"] },
    // network configuration
    { name: "ranges of the wrong type", env: add(), conf: ipamWith({ ranges: "x" }), code: 7 },
    { name: "an unknown strategy", env: add(), conf: ipamWith({ strategy: "fastest" }), code: 7 },
    { name: "exclude of the wrong type", env: add(), conf: ipamWith({ exclude: "10.77.0.7" }), code: 7 },
    { name: "dataDir of the wrong type", env: add(), conf: ipamWith({ dataDir: 5 }), code: 7 },
    { name: "ipam of the wrong type", env: add(), conf: (b) => ({ ...b, ipam: "containerscale-ipam" }), code: 7 },
    { name: "no ipam section", env: add(), conf: without("ipam"), code: 7, mentions: ["ipam"] },
    { name: "no network name", env: add(), conf: without("name"), code: 7 },
    { name: "an empty network name", env: add(), conf: (b) => ({ ...b, name: "" }), code: 7, mentions: ["network name"] },
    { name: "a network name with a path", env: add(), conf: (b) => ({ ...b, name: "../etc" }), code: 7, mentions: ["network name"] },
    { name: "a network name with a space", env: add(), conf: (b) => ({ ...b, name: "my net" }), code: 7 },
    { name: "a network name that is a number", env: add(), conf: (b) => ({ ...b, name: 5 }), code: 7 },
    { name: "DEL with a bad network name", env: attachmentEnv("DEL", "base"), conf: (b) => ({ ...b, name: "../x" }), code: 7 },
    { name: "a /31 subnet", env: add(), conf: ipamWith({ ranges: [[{ subnet: "10.77.0.0/31" }]] }), code: 7, mentions: ["ranges[0][0]"] },
    { name: "host bits set", env: add(), conf: ipamWith({ ranges: [[{ subnet: "10.77.0.5/24" }]] }), code: 7, mentions: ["host bits"] },
    {
      name: "rangeStart outside the subnet",
      env: add(),
      conf: ipamWith({ ranges: [[{ subnet: "10.77.0.0/24", rangeStart: "10.78.0.1" }]] }),
      code: 7,
      mentions: ["rangeStart"]
    },
    // requested addresses
    { name: "IP= outside the pool", env: add("newctr", "eth0", { CNI_ARGS: "IP=10.99.0.1" }), code: 102, mentions: ["10.99.0.1"] },
    { name: "IP= of the gateway", env: add("newctr", "eth0", { CNI_ARGS: "IP=10.77.0.1" }), code: 102, mentions: ["10.77.0.1"] },
    { name: "IP= of the network address", env: add("newctr", "eth0", { CNI_ARGS: "IP=10.77.0.0" }), code: 102 },
    { name: "IP= of the broadcast address", env: add("newctr", "eth0", { CNI_ARGS: "IP=10.77.0.255" }), code: 102 },
    { name: "IP= of the other family", env: add("newctr", "eth0", { CNI_ARGS: "IP=fd00::5" }), code: 102 },
    { name: "args.cni.ips outside the pool", env: add(), conf: (b) => ({ ...b, args: { cni: { ips: ["10.99.0.2"] } } }), code: 102 },
    { name: "runtimeConfig.ips outside the pool", env: add(), conf: (b) => ({ ...b, runtimeConfig: { ips: ["10.99.0.3/24"] } }), code: 102 },
    {
      name: "two requested addresses in one range set",
      env: add("newctr", "eth0", { CNI_ARGS: "IP=10.77.0.20,10.77.0.21" }),
      code: 102
    },
    { name: "IP= held by another container", env: add("newctr", "eth0", { CNI_ARGS: "IP=10.77.0.2" }), code: 103, mentions: ["base"] }
  ]

  for (const c of cases) {
    it(c.name, async () => {
      const dataDir = newDataDir()
      fs.cpSync(template, dataDir, { recursive: true })
      const base = baseConf(dataDir)
      const before = snapshot(dataDir)
      assert.isTrue(fs.existsSync(path.join(dataDir, "net1", "allocations")))
      const conf = c.conf === undefined ? base : c.conf(base)
      const stdin = c.stdin ?? json(conf)
      const run = await runPlugin(c.env, stdin)
      const e = expectError(run, c.name)
      assert.strictEqual(e.code, c.code, `${c.name}: ${e.msg} ${e.details ?? ""}`)
      assert.isAbove(e.msg.length, 0)
      for (const m of c.mentions ?? []) assert.include(`${e.msg} ${e.details ?? ""}`, m)
      // the error object speaks the request's version when there is one to speak
      const asked = c.stdin === undefined ? (conf as Record<string, unknown>).cniVersion : undefined
      if (typeof asked === "string") assert.strictEqual(e.cniVersion, asked)
      assert.deepStrictEqual(snapshot(dataDir), before, `${c.name} changed the store`)
    })
  }
})

describe.concurrent("pool exhausted and store damaged", () => {
  it("an exhausted pool answers 11 with what to do, and records nothing", async () => {
    const dataDir = newDataDir()
    const conf = netConf({ cniVersion: "1.0.0", dataDir, ranges: [[{ subnet: "10.79.0.0/30" }]] }) // one usable address
    assert.deepStrictEqual(ips(expectSuccess(await runPlugin(attachmentEnv("ADD", "t1"), json(conf)), "ADD t1")), ["10.79.0.2"])
    const before = snapshot(dataDir)
    const e = expectError(await runPlugin(attachmentEnv("ADD", "t2"), json(conf)), "ADD t2")
    assert.strictEqual(e.code, 11)
    assert.include(e.msg, "no free address")
    assert.include(e.msg, "run GC")
    assert.deepStrictEqual(snapshot(dataDir), before)
  })

  it("a damaged store answers 101 naming the file and the line, for every command but DEL, and is left alone", async () => {
    const dataDir = newDataDir()
    const conf = netConf({ cniVersion: "1.1.0", dataDir })
    for (const id of ["a", "b", "c"]) expectSuccess(await runPlugin(attachmentEnv("ADD", id), json(conf)), `ADD ${id}`)
    const file = path.join(dataDir, "net1", "allocations")
    const lines = fs.readFileSync(file, "latin1").split("\n")
    lines[2] = lines[2]!.replace(" b ", " x ")
    fs.writeFileSync(file, lines.join("\n"), "latin1")
    const before = snapshot(dataDir)
    const runs: Array<[string, CniEnv, unknown]> = [
      ["ADD", attachmentEnv("ADD", "d"), conf],
      ["CHECK", attachmentEnv("CHECK", "a"), conf],
      ["GC", { CNI_COMMAND: "GC", CNI_PATH: "/opt/cni/bin" }, { ...conf, "cni.dev/valid-attachments": [] }]
    ]
    for (const [what, env, stdin] of runs) {
      const e = expectError(await runPlugin(env, json(stdin)), what)
      assert.strictEqual(e.code, 101, `${what}: ${e.msg}`)
      assert.include(e.msg, file)
      assert.include(e.msg, "line 3")
    }
    assert.deepStrictEqual(snapshot(dataDir), before)
    // DEL must not block container removal: it succeeds, frees nothing and notes the damage (store-damage.test.ts)
    assert.strictEqual(expectSuccess(await runPlugin(attachmentEnv("DEL", "a"), json(conf)), "DEL"), undefined)
    const { [path.join("net1", "damaged")]: damage, ...after } = snapshot(dataDir)
    assert.isDefined(damage)
    assert.deepStrictEqual(after, before)
  })
})

describe.concurrent("DEL", () => {
  it("is idempotent: DEL after ADD frees the address, a second DEL succeeds too", async () => {
    const dataDir = newDataDir()
    const conf = netConf({ cniVersion: "1.0.0", dataDir })
    const pool = { ranges: [[{ subnet: "10.77.0.0/24" }]] }
    expectSuccess(await runPlugin(attachmentEnv("ADD", "x"), json(conf)), "ADD")
    expectSuccess(await runPlugin(attachmentEnv("ADD", "y"), json(conf)), "ADD")
    for (let i = 0; i < 2; i++) {
      const run = await runPlugin(attachmentEnv("DEL", "x"), json(conf))
      assert.strictEqual(expectSuccess(run, `DEL #${i + 1}`), undefined)
      assert.strictEqual(run.stdout, "")
    }
    assert.deepStrictEqual(await storeAllocations(dataDir, "net1", pool), [{ containerId: "y", ifname: "eth0", ip: "10.77.0.3" }])
  })

  it("of an attachment never added succeeds and changes nothing", async () => {
    const dataDir = newDataDir()
    const conf = netConf({ cniVersion: "1.1.0", dataDir })
    expectSuccess(await runPlugin(attachmentEnv("ADD", "x"), json(conf)), "ADD")
    const before = snapshot(dataDir)
    expectSuccess(await runPlugin(attachmentEnv("DEL", "never"), json(conf)), "DEL unknown")
    expectSuccess(await runPlugin(attachmentEnv("DEL", "x", "eth1"), json(conf)), "DEL other ifname")
    assert.deepStrictEqual(snapshot(dataDir), before)
    // and on a network that has no store yet
    expectSuccess(await runPlugin(attachmentEnv("DEL", "never"), json({ ...conf, name: "fresh" })), "DEL on an empty network")
  })

  it("with an empty or missing CNI_NETNS, without prevResult, and in every version, still releases", async () => {
    const dataDir = newDataDir()
    const pool = { ranges: [[{ subnet: "10.77.0.0/24" }]] }
    for (const version of ALL_VERSIONS) {
      const conf = netConf({ cniVersion: version, dataDir })
      expectSuccess(await runPlugin(attachmentEnv("ADD", "n1"), json(conf)), "ADD n1")
      expectSuccess(await runPlugin(attachmentEnv("ADD", "n2"), json(conf)), "ADD n2")
      expectSuccess(await runPlugin(attachmentEnv("DEL", "n1", "eth0", { CNI_NETNS: "" }), json(conf)), `DEL ${version} empty netns`)
      expectSuccess(await runPlugin(attachmentEnv("DEL", "n2", "eth0", { CNI_NETNS: undefined }), json(conf)), `DEL ${version} no netns`)
      assert.deepStrictEqual(await storeAllocations(dataDir, "net1", pool), [], `after DEL ${version}`)
    }
  })
})

describe.concurrent("CHECK", () => {
  it("passes after ADD with the ADD result as prevResult, fails after DEL", async () => {
    const dataDir = newDataDir()
    const conf = netConf({ cniVersion: "1.1.0", dataDir, ranges: [[{ subnet: "10.81.0.0/24" }], [{ subnet: "fd00:81::/120" }]] })
    const result = expectSuccess(await runPlugin(attachmentEnv("ADD", "k"), json(conf)), "ADD")
    const check = await runPlugin(attachmentEnv("CHECK", "k"), json({ ...conf, prevResult: result }))
    assert.strictEqual(expectSuccess(check, "CHECK"), undefined)
    assert.strictEqual(check.stdout, "")
    expectSuccess(await runPlugin(attachmentEnv("DEL", "k"), json({ ...conf, prevResult: result })), "DEL")
    const after = expectError(await runPlugin(attachmentEnv("CHECK", "k"), json({ ...conf, prevResult: result })), "CHECK after DEL")
    assert.strictEqual(after.code, 104)
    assert.include(after.msg, "k")
  })

  it("passes with a 0.4.0 prevResult (ips[].version), fails when prevResult misses an address", async () => {
    const dataDir = newDataDir()
    const conf = netConf({ cniVersion: "0.4.0", dataDir, ranges: [[{ subnet: "10.81.0.0/24" }], [{ subnet: "fd00:81::/120" }]] })
    const result = expectSuccess(await runPlugin(attachmentEnv("ADD", "k"), json(conf)), "ADD")
    assert.strictEqual(result.ips[0].version, "4")
    expectSuccess(await runPlugin(attachmentEnv("CHECK", "k"), json({ ...conf, prevResult: result })), "CHECK 0.4.0")
    const partial = { ...result, ips: result.ips.slice(0, 1) }
    const e = expectError(await runPlugin(attachmentEnv("CHECK", "k"), json({ ...conf, prevResult: partial })), "CHECK partial")
    assert.strictEqual(e.code, 104)
    assert.include(e.msg, "fd00:81::2")
    // another container's CHECK fails: it holds nothing
    expectError(await runPlugin(attachmentEnv("CHECK", "other"), json({ ...conf, prevResult: result })), "CHECK other")
  })

  it("without prevResult is an error (prevResult is required for CHECK)", async () => {
    const dataDir = newDataDir()
    const conf = netConf({ cniVersion: "1.0.0", dataDir })
    expectSuccess(await runPlugin(attachmentEnv("ADD", "k"), json(conf)), "ADD")
    expectError(await runPlugin(attachmentEnv("CHECK", "k"), json(conf)), "CHECK without prevResult")
  })
})

describe.concurrent("GC", () => {
  const pool = { ranges: [[{ subnet: "10.82.0.0/24" }]] }
  const gcEnv: CniEnv = { CNI_COMMAND: "GC", CNI_PATH: "/opt/cni/bin", CNI_CONTAINERID: "", CNI_IFNAME: "", CNI_NETNS: "" }
  const setup = async () => {
    const dataDir = newDataDir()
    const conf = netConf({ cniVersion: "1.1.0", dataDir, ranges: pool.ranges })
    for (const [id, ifname] of [["a", "eth0"], ["b", "eth0"], ["c", "eth0"], ["c", "eth1"]] as const) {
      expectSuccess(await runPlugin(attachmentEnv("ADD", id, ifname), json(conf)), `ADD ${id} ${ifname}`)
    }
    return { dataDir, conf }
  }
  const holders = async (dataDir: string) =>
    (await storeAllocations(dataDir, "net1", pool)).map((a) => `${a.containerId}/${a.ifname}`).sort()

  for (const key of ["cni.dev/valid-attachments", "cni.dev/attachments"]) {
    it(`with ${key}: releases the others, keeps the listed`, async () => {
      const { dataDir, conf } = await setup()
      const valid = [{ containerID: "a", ifname: "eth0" }, { containerID: "c", ifname: "eth1" }, { containerID: "gone", ifname: "eth0" }]
      const run = await runPlugin(gcEnv, json({ ...conf, [key]: valid }))
      assert.strictEqual(expectSuccess(run, "GC"), undefined)
      assert.strictEqual(run.stdout, "")
      assert.deepStrictEqual(await holders(dataDir), ["a/eth0", "c/eth1"])
    })
  }

  it("with neither key releases nothing", async () => {
    const { dataDir, conf } = await setup()
    const before = snapshot(dataDir)
    expectSuccess(await runPlugin(gcEnv, json(conf)), "GC")
    assert.deepStrictEqual(snapshot(dataDir), before)
    assert.deepStrictEqual(await holders(dataDir), ["a/eth0", "b/eth0", "c/eth0", "c/eth1"])
  })

  it("with an empty list releases everything", async () => {
    const { dataDir, conf } = await setup()
    expectSuccess(await runPlugin(gcEnv, json({ ...conf, "cni.dev/valid-attachments": [] })), "GC")
    assert.deepStrictEqual(await holders(dataDir), [])
  })
})

describe.concurrent("STATUS", () => {
  const statusEnv: CniEnv = { CNI_COMMAND: "STATUS", CNI_PATH: "/opt/cni/bin" }

  it("succeeds silently with 1.1.0", async () => {
    const dataDir = newDataDir()
    const run = await runPlugin(statusEnv, json(netConf({ cniVersion: "1.1.0", dataDir })))
    assert.strictEqual(expectSuccess(run, "STATUS"), undefined)
    assert.strictEqual(run.stdout, "")
  })

  it("answers 50 when the data directory cannot be written", async () => {
    const dir = newDataDir()
    const blocker = path.join(dir, "not-a-directory")
    fs.writeFileSync(blocker, "x")
    const before = snapshot(dir)
    const e = expectError(await runPlugin(statusEnv, json(netConf({ cniVersion: "1.1.0", dataDir: path.join(blocker, "ipam") }))), "STATUS")
    assert.strictEqual(e.code, 50)
    assert.strictEqual(e.cniVersion, "1.1.0")
    assert.include(e.msg, blocker)
    assert.deepStrictEqual(snapshot(dir), before)
  })
})

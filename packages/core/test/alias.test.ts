import { hostInterfaceAlias, parseHostInterfaceAlias } from "@containerscale/core"
import { assert, describe, it } from "@effect/vitest"

/** The host end's alias: whose attachment it is, per runtime, unambiguous and within IFALIASZ. */

const bytes = (s: string) => new TextEncoder().encode(s).length
const ID = "ab".repeat(32)

describe("hostInterfaceAlias", () => {
  it("names the runtime, the network, the container and the interface", () => {
    assert.strictEqual(hostInterfaceAlias("tailnet", ID, "eth0", "cni"), `containerscale:cni:tailnet:${ID}:eth0`)
    assert.strictEqual(hostInterfaceAlias("tailnet", ID, "eth0", "netavark"), `containerscale:netavark:tailnet:${ID}:eth0`)
    assert.strictEqual(hostInterfaceAlias("docker-0123456789ab", ID, "docker", "docker"), `containerscale:docker:docker-0123456789ab:${ID}:docker`)
    // without a runtime: CNI's, as every alias of the previous version
    assert.strictEqual(hostInterfaceAlias("tailnet", ID, "eth0"), `containerscale:cni:tailnet:${ID}:eth0`)
    for (const runtime of ["cni", "netavark", "docker"] as const) {
      assert.deepStrictEqual(parseHostInterfaceAlias(hostInterfaceAlias("tailnet", ID, "eth0", runtime)), {
        runtime,
        network: "tailnet",
        containerId: ID,
        ifname: "eth0"
      })
    }
  })

  it("escapes what would split a field, so odd names parse back as they were and name no other network", () => {
    const alias = hostInterfaceAlias("a:b", "x y#z@", "eth:0", "netavark")
    assert.strictEqual(alias, "containerscale:netavark:a@3Ab:x@20y@23z@40:eth@3A0")
    assert.deepStrictEqual(parseHostInterfaceAlias(alias), { runtime: "netavark", network: "a:b", containerId: "x y#z@", ifname: "eth:0" })
    assert.notStrictEqual(hostInterfaceAlias("a:b", "c", "d"), hostInterfaceAlias("a", "b:c", "d"))
    // only what the iproute2 layer passes in a step
    assert.match(alias, /^[A-Za-z0-9_.:/@-]+$/)
    const utf8 = hostInterfaceAlias("netz-ü", "c", "@@1")
    assert.strictEqual(utf8, "containerscale:cni:netz-@C3@BC:c:@40@401")
    assert.deepStrictEqual(parseHostInterfaceAlias(utf8), { runtime: "cni", network: "netz-ü", containerId: "c", ifname: "@@1" })
  })

  it("stays within IFALIASZ (255 bytes) for the longest names: a long field is written as its hash, the same every time", () => {
    const network = "n".repeat(255)
    const id = "c".repeat(1000)
    const ifname = "é".repeat(15) // 30 bytes, 90 escaped
    const alias = hostInterfaceAlias(network, id, ifname, "netavark")
    assert.isAtMost(bytes(alias), 255)
    assert.strictEqual(alias, hostInterfaceAlias(network, id, ifname, "netavark"))
    assert.match(alias, /^containerscale:netavark:@@[0-9a-f]{16}:@@[0-9a-f]{16}:@@[0-9a-f]{16}$/)
    assert.notStrictEqual(hostInterfaceAlias("pods", id, "eth0"), hostInterfaceAlias("pods", `${id}d`, "eth0"))
    // a 64-hex id, the runtimes' own, is written as it is; 128 bytes is the most written so
    assert.include(hostInterfaceAlias("pods", "c".repeat(128), "eth0"), "c".repeat(128))
    assert.notInclude(hostInterfaceAlias("pods", "c".repeat(129), "eth0"), "c".repeat(129))
    const owner = parseHostInterfaceAlias(hostInterfaceAlias("pods", id, "eth0"))
    assert.strictEqual(owner?.network, "pods")
    assert.match(owner?.containerId ?? "", /^@@[0-9a-f]{16}$/)
  })

  it("reads the previous version's aliases as CNI's, and no other alias as ours", () => {
    assert.deepStrictEqual(parseHostInterfaceAlias("containerscale:tailnet:old:eth0"), {
      runtime: "cni",
      network: "tailnet",
      containerId: "old",
      ifname: "eth0"
    })
    // a network the previous version let Netavark name "a:b": no runtime's, never CNI network "a"
    assert.isUndefined(parseHostInterfaceAlias("containerscale:a:b:id:eth0"))
    assert.isUndefined(parseHostInterfaceAlias("containerscale:podman:tailnet:id:eth0"))
    assert.isUndefined(parseHostInterfaceAlias("somebody-else:tailnet:id:eth0"))
    assert.isUndefined(parseHostInterfaceAlias("containerscale"))
    assert.isUndefined(parseHostInterfaceAlias(undefined))
  })
})

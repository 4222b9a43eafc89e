import { distBin, type Podman5Sandbox, podman5Sandbox } from "@containerscale/sandbox"
import { cleanUpAll, listLinks, netnsScope, uniquePrefix } from "@containerscale/testing"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

/**
 * The README's commands, read from the README at test time: every ```sh block that follows a
 * `<!-- test: NAME -->` line, run as written under Podman 5.4 and Netavark 1.14 in the cached
 * Debian trixie chroot (podman5Sandbox), inside a namespace that stands for the node. The
 * sandbox's /run lasts one shell, so all the blocks run in one shell, each after an `@@NAME`
 * marker line that splits the output. What differs from a user's machine:
 * - `sudo ` is dropped (the test runs as root);
 * - the blocks run from a stand-in for the checkout, whose dist/bin holds the build's executable;
 * - /usr/local/libexec is this test's directory (the cached chroot is never written);
 * - `podman` is a wrapper that adds the sandbox's `--cgroup-parent` to `podman run`;
 * - the image `docker.io/library/busybox:latest` is the sandbox's busybox;
 * - a containers.conf drop-in puts Podman's default `netavark_plugin_dirs` back (the sandbox's
 *   containers.conf names a plugin directory of its own).
 */

const README = path.join(import.meta.dirname, "..", "README.md")
const IMAGE = "docker.io/library/busybox:latest"

/** The ```sh blocks marked `<!-- test: NAME -->`, by name, in the README's order. */
const readmeBlocks = (file: string): Map<string, string> =>
  new Map([...fs.readFileSync(file, "utf8").matchAll(/^<!-- test: ([\w-]+) -->\n```sh\n([\s\S]*?)^```$/gm)].map((m) => [m[1]!, m[2]!]))

/** Podman's own default, as trixie's /usr/share/containers/containers.conf lists it. */
const defaultPluginDirs = ["/usr/local/libexec/netavark", "/usr/libexec/netavark", "/usr/local/lib/netavark", "/usr/lib/netavark"]

const prefix = uniquePrefix()
const scope = netnsScope(`${prefix}-`)

describe("examples/podman-netavark: the README under Podman 5 and Netavark 1.14", () => {
  let pm: Podman5Sandbox | undefined
  let nodeName = ""

  beforeAll(async () => {
    nodeName = scope.create("node")
    // the first run on a machine builds the chroot (debootstrap, a few minutes); later runs find it cached
    pm = await podman5Sandbox({ prefix, binaries: { containerscale: path.join(distBin(), "containerscale") }, netns: nodeName })
  }, 600_000)

  afterAll(() => cleanUpAll([() => pm?.dispose(), () => scope.dispose()]), 60_000)

  it("installs the plugin, gives two containers subnet addresses and routes through the node, and cleans up to nothing", async () => {
    const p = pm!
    const blocks = readmeBlocks(README)
    expect([...blocks.keys()]).toEqual(["install", "web", "client", "node", "uninstall"])

    // the sandbox's directory is at the same path inside the chroot
    const libexec = path.join(p.paths.files, "libexec")
    const wrappers = path.join(p.paths.files, "wrappers")
    const checkout = path.join(p.paths.files, "checkout")
    for (const dir of [libexec, wrappers, path.join(checkout, "dist"), path.join(p.dir, "etc", "containers.conf.d")]) fs.mkdirSync(dir, { recursive: true })
    fs.symlinkSync(p.paths.bin, path.join(checkout, "dist", "bin"))
    fs.writeFileSync(
      path.join(wrappers, "podman"),
      `#!/bin/sh\nif [ "$1" = run ]; then shift; exec /usr/bin/podman run --cgroup-parent=${p.cgroupParent} "$@"; fi\nexec /usr/bin/podman "$@"\n`,
      { mode: 0o755 }
    )
    fs.writeFileSync(
      path.join(p.dir, "etc", "containers.conf.d", "50-default-plugin-dirs.conf"),
      `[network]\nnetavark_plugin_dirs = ${JSON.stringify(defaultPluginDirs)}\n`
    )

    const script = [
      `mount --bind ${libexec} /usr/local/libexec`,
      `export PATH=${wrappers}:$PATH`,
      `cd ${checkout}`,
      // a safety net for a failing block; after the README's own clean-up it finds nothing
      `trap 'podman rm -f -t 0 -a >/dev/null 2>&1 || true; for n in $(podman network ls -q); do [ "$n" = podman ] || podman network rm -f "$n" >/dev/null 2>&1 || true; done' EXIT`,
      ...[...blocks].flatMap(([name, block]) => [`echo @@${name}`, block.replace(/\bsudo /g, "").replaceAll(IMAGE, p.image)]),
      "echo @@after",
      `echo "containers: $(podman ps -a -q | wc -l)"`,
      `echo "networks: $(podman network ls -q | tr '\\n' ' ')"`,
      `echo "links: $(ip -o link show | grep -c ': cs' || true)"`
    ].join("\n")
    const r = await p.sh(script, { timeoutMs: 120_000 })
    expect(r.code, r.stdout + r.stderr).toBe(0)
    const out = Object.fromEntries(r.stdout.split(/^@@/m).slice(1).map((s) => [s.slice(0, s.indexOf("\n")), s.slice(s.indexOf("\n") + 1)]))
    expect(Object.keys(out)).toEqual([...blocks.keys(), "after"])

    expect(out["install"]).toContain("containerscale-netavark")
    expect(out["install"]).not.toMatch(/\bcontainerscale(?!-)/) // the executable is no driver of its own
    expect(out["web"]!.trim().split("\n").at(-1)).toBe("10.89.7.2")
    expect(out["client"]).toMatch(/inet 10\.89\.7\.3\/24/)
    expect(out["client"]).toMatch(/^default via 10\.89\.7\.1 dev eth0/m)
    expect(out["client"]!.match(/1 packets received/g)).toHaveLength(2) // the gateway, then web
    expect(out["node"]).toMatch(/^10\.89\.7\.2 dev cs[0-9a-f]{11} /m)
    expect(out["node"]).not.toContain("10.89.7.3") // the client's teardown removed its route
    expect(out["after"]).toBe("containers: 0\nnetworks: podman \nlinks: 0\n")
    expect(listLinks(nodeName, "cs")).toEqual([])
    expect(fs.readdirSync(libexec)).toEqual([])
  }, 120_000)
})

#!/usr/bin/env node
/**
 * image [--repository REPO] [--tag TAG] [--out FILE]: the container image of every program, as one
 * archive that `ctr images import`, `podman load` and `docker load` take, made without a daemon or
 * a registry. It holds the multicall executable `containerscale` with a link per program, the
 * tools the programs run (iproute2's `ip`, util-linux's `nsenter` and `unshare`) and the shared
 * libraries all of them load, taken from this machine. Reproducible: the same inputs give the same
 * bytes (entries sorted, times zero, owners root). Default reference:
 * ghcr.io/containerscale/containerscale:<the packages' version>; default file:
 * dist/image/containerscale-<tag>.tar. Run after `npm run build`.
 */
import { execFileSync } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { parseArgs } from "node:util"

const root = path.resolve(import.meta.dirname, "..")
const version = JSON.parse(fs.readFileSync(path.join(root, "packages", "core", "package.json"), "utf8")).version as string
const { values } = parseArgs({
  options: { repository: { type: "string", default: "ghcr.io/containerscale/containerscale" }, tag: { type: "string", default: version }, out: { type: "string" } }
})
const reference = `${values.repository}:${values.tag}`
const out = path.resolve(values.out ?? path.join(root, "dist", "image", `containerscale-${values.tag}.tar`))

const fail = (message: string): never => {
  process.stderr.write(`image: ${message}\n`)
  process.exit(1)
}

// ---- the files of the layer

type Entry =
  | { readonly kind: "dir"; readonly path: string; readonly mode: number }
  | { readonly kind: "file"; readonly path: string; readonly mode: number; readonly data: Buffer }
  | { readonly kind: "link"; readonly path: string; readonly target: string }

const bin = path.join(root, "dist", "bin")
const executable = path.join(bin, "containerscale")
if (!fs.existsSync(executable)) fail(`${executable} is missing: run npm run build first`)
const programs = execFileSync(executable, ["--list"], { encoding: "utf8" }).trim().split("\n")
const tools = ["/usr/sbin/ip", "/usr/bin/nsenter", "/usr/bin/unshare"]

/** The shared libraries a program loads, as ldd names them (the loader included). */
const librariesOf = (file: string): Array<string> =>
  execFileSync("ldd", [file], { encoding: "utf8" }).split("\n").flatMap((line) => {
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line)
    return m === null ? [] : [m[1]!]
  })

const entries = new Map<string, Entry>()
const addDirs = (file: string) => {
  for (let dir = path.posix.dirname(file); dir !== "/"; dir = path.posix.dirname(dir)) {
    if (!entries.has(dir)) entries.set(dir, { kind: "dir", path: dir, mode: dir === "/tmp" ? 0o1777 : 0o755 })
  }
}
const add = (entry: Entry) => {
  addDirs(entry.path)
  entries.set(entry.path, entry)
}
/** A file of this machine at the same path; a library reached through a link keeps the link. */
const copyHostFile = (file: string) => {
  if (entries.has(file)) return
  const st = fs.lstatSync(file)
  if (st.isSymbolicLink()) {
    const target = fs.readlinkSync(file)
    add({ kind: "link", path: file, target })
    copyHostFile(path.resolve(path.dirname(file), target))
  } else {
    add({ kind: "file", path: file, mode: st.mode & 0o755, data: fs.readFileSync(file) })
  }
}

add({ kind: "file", path: "/usr/local/bin/containerscale", mode: 0o755, data: fs.readFileSync(executable) })
for (const name of programs.filter((p) => p !== "containerscale")) add({ kind: "link", path: `/usr/local/bin/${name}`, target: "containerscale" })
for (const tool of tools) copyHostFile(tool)
for (const lib of new Set([executable, ...tools].flatMap(librariesOf))) copyHostFile(lib)
add({ kind: "dir", path: "/tmp", mode: 0o1777 })
add({ kind: "file", path: "/etc/passwd", mode: 0o644, data: Buffer.from("root:x:0:0:root:/root:/sbin/nologin\n") })
add({ kind: "file", path: "/etc/group", mode: 0o644, data: Buffer.from("root:x:0:\n") })

// ---- a deterministic ustar writer

const header = (name: string, size: number, mode: number, type: string, link = ""): Buffer => {
  const h = Buffer.alloc(512)
  let prefix = ""
  if (Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf("/", 155)
    prefix = name.slice(0, cut)
    name = name.slice(cut + 1)
    if (Buffer.byteLength(name) > 100 || cut <= 0) fail(`path too long for a tar header: ${prefix}/${name}`)
  }
  const octal = (n: number, width: number) => n.toString(8).padStart(width - 1, "0") + "\0"
  h.write(name, 0, 100)
  h.write(octal(mode, 8), 100)
  h.write(octal(0, 8), 108)
  h.write(octal(0, 8), 116)
  h.write(octal(size, 12), 124)
  h.write(octal(0, 12), 136)
  h.write("        ", 148)
  h.write(type, 156)
  h.write(link, 157, 100)
  h.write("ustar\u000000", 257)
  h.write(prefix, 345, 155)
  let sum = 0
  for (const byte of h) sum += byte
  h.write(octal(sum, 7) + " ", 148)
  return h
}

const tar = (items: ReadonlyArray<{ readonly name: string; readonly data?: Buffer; readonly mode: number; readonly type: "0" | "2" | "5"; readonly link?: string }>): Buffer => {
  const parts: Array<Buffer> = []
  for (const item of items) {
    const data = item.data ?? Buffer.alloc(0)
    parts.push(header(item.name, data.length, item.mode, item.type, item.link), data, Buffer.alloc((512 - (data.length % 512)) % 512))
  }
  parts.push(Buffer.alloc(1024))
  return Buffer.concat(parts)
}

const layer = tar([...entries.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)).map((e) => {
  const name = e.path.slice(1) + (e.kind === "dir" ? "/" : "")
  return e.kind === "dir"
    ? { name, mode: e.mode, type: "5" as const }
    : e.kind === "link"
      ? { name, mode: 0o777, type: "2" as const, link: e.target }
      : { name, mode: e.mode, type: "0" as const, data: e.data }
}))

// ---- the image: OCI layout, with docker-save's manifest.json beside it

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex")
const json = (value: unknown) => Buffer.from(JSON.stringify(value))
const descriptor = (mediaType: string, data: Buffer, extra: object = {}) => ({ mediaType, digest: `sha256:${sha256(data)}`, size: data.length, ...extra })
const toolPackages = ["iproute2", "util-linux", "libc6"].map((p) => `${p} ${execFileSync("dpkg-query", ["-W", "-f", "${Version}", p], { encoding: "utf8" })}`)

const arch = { x64: "amd64", arm64: "arm64" }[process.arch as string] ?? fail(`no image architecture for ${process.arch}`)
const config = json({
  architecture: arch,
  os: "linux",
  config: {
    Entrypoint: ["/usr/local/bin/containerscale-agent"],
    Env: ["PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    Labels: {
      "org.opencontainers.image.title": "containerscale",
      "org.opencontainers.image.version": version,
      "org.opencontainers.image.licenses": "Apache-2.0",
      "io.containerscale.tools": toolPackages.join(", ")
    }
  },
  rootfs: { type: "layers", diff_ids: [`sha256:${sha256(layer)}`] },
  history: [{ created_by: "scripts/image.ts" }]
})
const manifest = json({
  schemaVersion: 2,
  mediaType: "application/vnd.oci.image.manifest.v1+json",
  config: descriptor("application/vnd.oci.image.config.v1+json", config),
  layers: [descriptor("application/vnd.oci.image.layer.v1.tar", layer)]
})
const index = json({
  schemaVersion: 2,
  mediaType: "application/vnd.oci.image.index.v1+json",
  manifests: [descriptor("application/vnd.oci.image.manifest.v1+json", manifest, {
    annotations: { "io.containerd.image.name": reference, "org.opencontainers.image.ref.name": values.tag }
  })]
})
const blob = (data: Buffer) => ({ name: `blobs/sha256/${sha256(data)}`, data, mode: 0o644, type: "0" as const })
const archive = tar([
  { name: "blobs/", mode: 0o755, type: "5" },
  { name: "blobs/sha256/", mode: 0o755, type: "5" },
  ...[config, layer, manifest].map(blob).sort((a, b) => (a.name < b.name ? -1 : 1)),
  { name: "index.json", data: index, mode: 0o644, type: "0" },
  { name: "manifest.json", data: json([{ Config: blob(config).name, RepoTags: [reference], Layers: [blob(layer).name] }]), mode: 0o644, type: "0" },
  { name: "oci-layout", data: json({ imageLayoutVersion: "1.0.0" }), mode: 0o644, type: "0" }
])

fs.mkdirSync(path.dirname(out), { recursive: true })
fs.writeFileSync(`${out}.tmp`, archive)
fs.renameSync(`${out}.tmp`, out)
process.stdout.write(`image: ${reference} -> ${path.relative(process.cwd(), out)} (${(archive.length / 1048576).toFixed(1)} MiB, manifest sha256:${sha256(manifest)})\n`)

#!/usr/bin/env node
/**
 * stage-packages: writes each public package as npm will publish it into packages/NAME/publish/
 * (its `publishConfig.directory`, which `changeset pack` and `changeset publish` use): the built
 * files, the README, the repository's LICENSE, and a package.json without what only this
 * repository uses (the `source` export condition, scripts, devDependencies), with the repository's
 * metadata. Run after `npm run build`; it stops on the first missing build output.
 */
import * as fs from "node:fs"
import * as path from "node:path"

type Json = Record<string, unknown>

const root = path.resolve(import.meta.dirname, "..")
const readJson = (file: string): Json => JSON.parse(fs.readFileSync(file, "utf8"))
const rootManifest = readJson(path.join(root, "package.json"))

const fail = (message: string): never => {
  process.stderr.write(`stage-packages: ${message}\n`)
  process.exit(1)
}

/** An exports or imports map without the `source` condition (it points into src/ for this repository's tools). */
const withoutSource = (value: unknown): unknown => {
  if (typeof value !== "object" || value === null) return value
  return Object.fromEntries(Object.entries(value).filter(([key]) => key !== "source").map(([key, v]) => [key, withoutSource(v)]))
}

/** Every file an exports/imports/bin map names, so a missing build output stops the staging. */
const targets = (value: unknown): Array<string> =>
  typeof value === "string" ? [value] : typeof value === "object" && value !== null ? Object.values(value).flatMap(targets) : []

const stage = (dir: string): string => {
  const manifest = readJson(path.join(dir, "package.json"))
  const out = path.join(dir, String((manifest.publishConfig as Json | undefined)?.directory ?? fail(`${dir}: no publishConfig.directory`)))
  const published: Json = {
    ...manifest,
    repository: { ...(rootManifest.repository as Json), directory: path.relative(root, dir) },
    homepage: rootManifest.homepage,
    bugs: rootManifest.bugs,
    exports: withoutSource(manifest.exports),
    ...(manifest.imports === undefined ? {} : { imports: withoutSource(manifest.imports) }),
    publishConfig: { access: (manifest.publishConfig as Json).access }
  }
  delete published.scripts
  delete published.devDependencies
  fs.rmSync(out, { recursive: true, force: true })
  fs.mkdirSync(out)
  for (const entry of [...(manifest.files as Array<string>), "README.md"]) {
    const from = path.join(dir, entry)
    if (!fs.existsSync(from)) fail(`${path.relative(root, from)} is missing: run npm run build first`)
    fs.cpSync(from, path.join(out, entry), { recursive: true, filter: (file) => !file.endsWith(".tsbuildinfo") })
  }
  fs.copyFileSync(path.join(root, "LICENSE"), path.join(out, "LICENSE"))
  fs.writeFileSync(path.join(out, "package.json"), `${JSON.stringify(published, null, 2)}\n`)
  for (const file of [...targets(published.exports), ...targets(published.imports), ...targets(published.bin)]) {
    if (!fs.existsSync(path.join(out, file))) fail(`${manifest.name}: ${file} is named in package.json but was not built`)
  }
  for (const cpu of (manifest.cpu as Array<string> | undefined) ?? []) {
    if (!fs.existsSync(path.join(out, "native", "prebuilds", `linux-${cpu}`))) {
      fail(`${manifest.name} declares cpu ${cpu} but has no native build for linux-${cpu} (native/build.sh)`)
    }
  }
  return out
}

const packagesDir = path.join(root, "packages")
for (const name of fs.readdirSync(packagesDir).sort()) {
  const dir = path.join(packagesDir, name)
  if (!fs.existsSync(path.join(dir, "package.json")) || readJson(path.join(dir, "package.json")).private === true) continue
  process.stdout.write(`stage-packages: ${path.relative(root, stage(dir))}\n`)
}

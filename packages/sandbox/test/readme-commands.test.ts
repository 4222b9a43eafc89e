import { execFileSync, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { distBin, repoRoot } from "../src/repo.ts"

/**
 * The documentation against the code: every command line of the READMEs' shell blocks names a
 * script, npm script, program, subcommand and flag that exist, and every relative link a file.
 * The examples' own tests run their READMEs' blocks against the runtimes; the demo test runs
 * the top README's demo.
 */

const root = repoRoot()
const docs = [
  "README.md", "ARCHITECTURE.md", "SECURITY.md", "bench/README.md", "scripts/README.md",
  ...["packages", "examples"].flatMap((dir) =>
    fs.readdirSync(path.join(root, dir)).map((p) => `${dir}/${p}/README.md`).filter((f) => fs.existsSync(path.join(root, f)))
  )
]

/** The lines of the shell blocks (```sh, ```bash, ```console), continuations joined, comments and prompts dropped. */
const commandLines = (doc: string): Array<string> => {
  const text = fs.readFileSync(path.join(root, doc), "utf8")
  const blocks = [...text.matchAll(/^```(?:sh|bash|shell|console)\b[^\n]*\n([\s\S]*?)^```/gm)].map((m) => m[1]!)
  return blocks.flatMap((b) => b.replace(/\\\n\s*/g, " ").split("\n"))
    .map((l) => l.replace(/^\s*(\$|#)\s+/, "").replace(/\s+#\s.*$/, "").trim())
    .filter((l) => l !== "" && !l.startsWith("#"))
}

/** Each simple command of a line: split at pipes, `&&`, `||` and `;`, with `sudo` and env assignments dropped. */
const simpleCommands = (line: string): Array<Array<string>> =>
  line.split(/\s*(?:&&|\|\||;|\|)\s*/).map((part) =>
    part.split(/\s+/).filter((w) => w !== "").filter((w, i, all) => !(all.slice(0, i + 1).every((x) => /^[A-Z_][A-Z0-9_]*=/.test(x) || x === "sudo")))
  ).filter((words) => words.length > 0)

const all = docs.flatMap((doc) => commandLines(doc).flatMap((line) => simpleCommands(line).map((words) => ({ doc, line, words }))))
const programs = ["containerscale", "containerscale-ipam", "containerscale-netavark", "containerscale-docker", "containerscale-agent", "containerscalectl"]
const rootScripts = Object.keys(JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")).scripts)

const helpOf = new Map<string, string>()
const help = (args: ReadonlyArray<string>): string => {
  const key = args.join(" ")
  if (!helpOf.has(key)) {
    const r = spawnSync(path.join(distBin(), args[0]!), [...args.slice(1), "--help"], { encoding: "utf8", timeout: 20_000 })
    helpOf.set(key, `${r.stdout}${r.stderr}`)
  }
  return helpOf.get(key)!
}

describe("the READMEs' commands", () => {
  it("were found (the docs have shell blocks to check)", () => {
    expect(all.length).toBeGreaterThan(20)
  })

  it("run scripts that exist and are executable", () => {
    for (const { doc, line, words } of all) {
      const script = words.find((w) => /^(\.\/)?scripts\/[\w.-]+$/.test(w))
      if (script === undefined) continue
      const file = path.join(root, script)
      expect(fs.existsSync(file), `${doc}: "${line}" names ${script}, which does not exist`).toBe(true)
      expect(fs.statSync(file).mode & 0o111, `${doc}: ${script} is not executable`).not.toBe(0)
    }
  })

  it("run npm scripts that exist", () => {
    for (const { doc, line, words } of all) {
      if (words[0] !== "npm" || words[1] !== "run" || words[2] === undefined) continue
      const own = doc.startsWith("examples/") ? [] : rootScripts
      expect(own.concat(rootScripts), `${doc}: "${line}"`).toContain(words[2])
    }
  })

  it("name programs, subcommands and flags that exist", () => {
    let checked = 0
    for (const { doc, line, words } of all) {
      const program = path.basename(words[0]!)
      if (!programs.includes(program) || words.includes("--help")) continue
      const sub = program === "containerscalectl" && words[1] !== undefined && /^[a-z]+$/.test(words[1]) ? [words[1]] : []
      const text = program === "containerscale" || program === "containerscale-ipam" || program === "containerscale-netavark"
        ? execFileSync(path.join(distBin(), program), ["--version"], { encoding: "utf8" })
        : help([program, ...sub])
      for (const flag of words.filter((w) => /^--[a-z][a-z-]*/.test(w)).map((w) => w.split("=")[0]!)) {
        if (flag === "--version") continue
        expect(text, `${doc}: "${line}": ${program} ${sub.join(" ")} has no ${flag}`).toContain(flag)
      }
      checked++
    }
    expect(checked).toBeGreaterThan(5)
  })

  it("link to files that exist", () => {
    for (const doc of docs) {
      const text = fs.readFileSync(path.join(root, doc), "utf8")
      for (const m of text.matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)) {
        const target = m[1]!
        if (/^[a-z]+:/.test(target)) continue
        expect(fs.existsSync(path.join(root, path.dirname(doc), target)), `${doc} links to ${target}, which does not exist`).toBe(true)
      }
    }
  })
})

import { runTailnetDemo } from "./demo.ts"

const args = process.argv.slice(2)
const unknown = args.filter((a) => a !== "--stand-in")
if (unknown.length > 0) {
  console.error(`demo: unknown argument ${unknown[0]} (the only option is --stand-in)`)
  process.exit(2)
}
try {
  await runTailnetDemo({ log: (line) => console.log(line), ...(args.includes("--stand-in") ? { tailnet: "stand-in" as const } : {}) })
} catch (e) {
  console.error(`demo failed: ${e instanceof Error ? e.message : String(e)}`)
  process.exitCode = 1
}

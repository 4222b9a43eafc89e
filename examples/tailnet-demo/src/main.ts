import { runTailnetDemo } from "./demo.ts"

try {
  await runTailnetDemo({ log: (line) => console.log(line) })
} catch (e) {
  console.error(`demo failed: ${e instanceof Error ? e.message : String(e)}`)
  process.exitCode = 1
}

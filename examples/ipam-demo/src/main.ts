import { runDemo } from "./demo.ts"

try {
  await runDemo({ log: (line) => console.log(line) })
} catch (e) {
  console.error(`demo failed: ${e instanceof Error ? e.message : String(e)}`)
  process.exitCode = 1
}

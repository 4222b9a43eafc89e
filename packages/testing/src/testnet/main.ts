#!/usr/bin/env node
// containerscale-testnet: the testnet control server's command line (see cli.ts for the commands).
// No top-level await: the compiled binary is bundled as CommonJS (bytecode).
import { runCli } from "./cli.ts"

runCli(process.argv.slice(2)).then((code) => {
  process.exitCode = code
})

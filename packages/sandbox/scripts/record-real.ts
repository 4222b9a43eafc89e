#!/usr/bin/env node
// Records the real daemons' answers into the core's fixtures (see src/tailnet/recorder.ts):
//   flock /tmp/cs-build.lock true && node --conditions=source packages/sandbox/scripts/record-real.ts
// Needs root (namespaces) and the cached real daemons (scripts/tailnet-runtime builds them).
import * as path from "node:path"
import { recordRealAnswers } from "../src/tailnet/recorder.ts"

const fixtures = path.join(import.meta.dirname, "..", "..", "core", "test", "fixtures")
await recordRealAnswers({
  localApiDir: path.join(fixtures, "localapi"),
  headscaleDir: path.join(fixtures, "headscale")
})
process.stderr.write(`recorded into ${path.relative(process.cwd(), fixtures)}/localapi and /headscale\n`)

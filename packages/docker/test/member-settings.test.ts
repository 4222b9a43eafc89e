import { DEFAULT_STATE_DIR, type MemberOptions } from "@containerscale/core"
import { resolveMemberSettings } from "@containerscale/core/member"
import { SettingsTable } from "@containerscale/sandbox"
import { afterAll, beforeAll, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import { dockerSpelling, memberNetworkOf } from "../src/options.ts"

/**
 * The settings table through Docker's `-o containerscale.*` options (the same table runs through a
 * CNI config and the Podman options). The state directory is the driver's (`--state-dir`).
 */

const attachment = { network: "table", containerId: "c0ffee", ifname: "docker" }
let removeKeys = () => {}
beforeAll(() => void (removeKeys = SettingsTable.writeKeyFiles(fs)))
afterAll(() => removeKeys())

describe("member settings from Docker network options resolve as the core resolves them", () => {
  for (const row of SettingsTable.ROWS) {
    it.effect(row.what, () =>
      Effect.gen(function*() {
        const core = yield* SettingsTable.outcomeOf(
          resolveMemberSettings(row.options as MemberOptions, attachment, row.env, dockerSpelling, { withAuthKey: true })
        )
        const { stateDir, ...rest } = row.options
        const own: Record<string, string> = { "containerscale.mode": "member" }
        for (const [k, v] of Object.entries(rest)) own[dockerSpelling.name(k as keyof MemberOptions)] = SettingsTable.asString(v)
        const adapter = yield* SettingsTable.outcomeOf(
          Effect.flatMap(
            memberNetworkOf(own, typeof stateDir === "string" ? stateDir : DEFAULT_STATE_DIR, row.env),
            (n) => resolveMemberSettings(n.options, attachment, n.env, n.spelling, { withAuthKey: true })
          )
        )
        SettingsTable.expectSame(row, core, adapter)
      }))
  }
})

import type { MemberOptions } from "@containerscale/core"
import { resolveMemberSettings } from "@containerscale/core/member"
import { SettingsTable } from "@containerscale/sandbox"
import { afterAll, beforeAll, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import { cniSpelling, memberNetworkOf } from "../src/member.ts"

/** The settings table through a CNI network config (the same table runs through the Docker and Netavark options). */

const attachment = { network: "table", containerId: "c0ffee", ifname: "eth0" }
let removeKeys = () => {}
beforeAll(() => void (removeKeys = SettingsTable.writeKeyFiles(fs)))
afterAll(() => removeKeys())

describe("member settings from a CNI config resolve as the core resolves them", () => {
  for (const row of SettingsTable.ROWS) {
    it.effect(row.what, () =>
      Effect.gen(function*() {
        const core = yield* SettingsTable.outcomeOf(
          resolveMemberSettings(row.options as MemberOptions, attachment, row.env, cniSpelling, { withAuthKey: true })
        )
        const raw = { cniVersion: "1.1.0", name: "table", type: "containerscale", ...row.options }
        const adapter = yield* SettingsTable.outcomeOf(
          Effect.flatMap(memberNetworkOf({ raw, env: row.env }), (n) => resolveMemberSettings(n.options, attachment, n.env, n.spelling, { withAuthKey: true }))
        )
        SettingsTable.expectSame(row, core, adapter)
      }))
  }
})

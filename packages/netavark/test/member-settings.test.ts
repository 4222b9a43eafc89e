import type { MemberOptions } from "@containerscale/core"
import { resolveMemberSettings } from "@containerscale/core/member"
import { SettingsTable } from "@containerscale/sandbox"
import { afterAll, beforeAll, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import { memberNetworkOf, netavarkSpelling, optionsOf } from "../src/options.ts"

/** The settings table through Podman's `-o` options (the same table runs through a CNI config and the Docker options). */

const attachment = { network: "table", containerId: "c0ffee", ifname: "eth0" }
let removeKeys = () => {}
beforeAll(() => void (removeKeys = SettingsTable.writeKeyFiles(fs)))
afterAll(() => removeKeys())

describe("member settings from Podman network options resolve as the core resolves them", () => {
  for (const row of SettingsTable.ROWS) {
    it.effect(row.what, () =>
      Effect.gen(function*() {
        const core = yield* SettingsTable.outcomeOf(
          resolveMemberSettings(row.options as MemberOptions, attachment, row.env, netavarkSpelling, { withAuthKey: true })
        )
        const options: Record<string, string> = { mode: "member" }
        for (const [k, v] of Object.entries(row.options)) options[netavarkSpelling.name(k as keyof MemberOptions)] = SettingsTable.asString(v)
        const network = { name: "table", id: "f".repeat(64), driver: "containerscale-netavark", options }
        const adapter = yield* SettingsTable.outcomeOf(
          Effect.flatMap(optionsOf(network), (o) => {
            const n = memberNetworkOf(o, row.env)
            return resolveMemberSettings(n.options, attachment, n.env, n.spelling, { withAuthKey: true })
          })
        )
        SettingsTable.expectSame(row, core, adapter)
      }))
  }
})

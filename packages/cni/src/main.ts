#!/usr/bin/env node
import { cniModeOf, Ipam, layerIproute2 } from "@containerscale/core"
import { LocalApi, Member } from "@containerscale/core/member"
import { Layer } from "effect"
import { runCniBinary } from "./binary.ts"
import { containerscalePlugin } from "./plugin.ts"

runCniBinary(containerscalePlugin, Layer.mergeAll(Ipam.layer(), Member.layer).pipe(Layer.provideMerge(Layer.merge(layerIproute2, LocalApi.layer))), {
  mode: (config) => (config !== undefined && cniModeOf(config) === "member" ? "member" : "router")
})

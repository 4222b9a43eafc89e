#!/usr/bin/env node
import { Ipam, layerIproute2, LocalApi, Member } from "@containerscale/core"
import { Layer } from "effect"
import { runCniBinary } from "./binary.ts"
import { containerscalePlugin } from "./plugin.ts"

runCniBinary(containerscalePlugin, Layer.mergeAll(Ipam.layer(), Member.layer).pipe(Layer.provideMerge(Layer.merge(layerIproute2, LocalApi.layer))))

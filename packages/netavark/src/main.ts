#!/usr/bin/env node
import { layerIproute2 } from "@containerscale/core"
import { LocalApi, Member } from "@containerscale/core/member"
import { Layer } from "effect"
import { runNetavarkPlugin } from "./binary.ts"

runNetavarkPlugin(process.argv.slice(2), Member.layer.pipe(Layer.provideMerge(Layer.merge(layerIproute2, LocalApi.layer))))

#!/usr/bin/env node
import { layerIproute2, LocalApi, Member } from "@containerscale/core"
import { Layer } from "effect"
import { runNetavarkPlugin } from "./binary.ts"

runNetavarkPlugin(process.argv.slice(2), Member.layer.pipe(Layer.provideMerge(Layer.merge(layerIproute2, LocalApi.layer))))

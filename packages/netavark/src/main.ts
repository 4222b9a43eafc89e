#!/usr/bin/env node
import { layerIproute2 } from "@containerscale/core"
import { runNetavarkPlugin } from "./binary.ts"

runNetavarkPlugin(process.argv.slice(2), layerIproute2)

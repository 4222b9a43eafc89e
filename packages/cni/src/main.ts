#!/usr/bin/env node
import { Ipam, layerIproute2 } from "@containerscale/core"
import { Layer } from "effect"
import { runCniBinary } from "./binary.ts"
import { containerscalePlugin } from "./plugin.ts"

runCniBinary(containerscalePlugin, Layer.mergeAll(layerIproute2, Ipam.layer()))

#!/usr/bin/env node
import { runCniBinary } from "@containerscale/cni"
import { Ipam } from "@containerscale/core"
import { ipamPlugin } from "./plugin.ts"

runCniBinary(ipamPlugin, Ipam.layer(), { name: "containerscale-ipam", mode: () => "ipam" })

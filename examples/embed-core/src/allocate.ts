import { Ipam, resolvePool } from "@containerscale/core"
import { Effect, Result } from "effect"

// The IPAM store's folder: the plugins' default, or the first argument.
const dataDir = process.argv[2] ?? "/var/lib/containerscale/ipam"
const pool = Result.getOrThrow(resolvePool({ ranges: [[{ subnet: "10.244.1.0/24" }]], strategy: "dense" }))

const program = Effect.gen(function*() {
  const ipam = yield* Ipam
  const leases = yield* ipam.allocate({ network: "pods", pool, containerId: "c1", ifname: "eth0" })
  // [{ family: 4, ip: "10.244.1.2", address: "10.244.1.2/24", gateway: "10.244.1.1", rangeSet: 0 }]
  console.log(JSON.stringify(leases))
  yield* ipam.release({ network: "pods", containerId: "c1", ifname: "eth0" })
})

Effect.runPromise(program.pipe(Effect.provide(Ipam.layer({ dataDir }))))

import { type DockerDriver, startDockerDriver, distBin } from "@containerscale/sandbox"
import { cleanUpAll, netnsPath, netnsScope, uniquePrefix } from "@containerscale/testing"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import { post } from "./helpers.ts"

/**
 * Request bodies are capped at 1 MiB: the compiled driver (in a throwaway namespace) answers a
 * larger one 413 with its JSON error, without reading what it declares (Content-Length) or more
 * than the cap (chunked), so its peak memory stays where it was; the next request is served.
 */

const prefix = uniquePrefix()
const binary = process.env.CONTAINERSCALE_DOCKER ?? path.join(distBin(), "containerscale-docker")
const MiB = 1024 * 1024

interface Sent {
  /** 0 when the connection ended before an answer */
  readonly status: number
  readonly body: any
  /** body bytes the client got to write before the answer came (or the connection ended) */
  readonly written: number
  readonly error?: string
}

/**
 * POSTs a JSON body of `size` bytes (`{"pad":"xxx…"}`), with a Content-Length or chunked, written
 * in 64 KiB pieces as fast as the driver takes them, stopping once the answer is in. A connection
 * the driver closes before the client read an answer gives status 0.
 */
const postLarge = (socket: string, method: string, size: number, mode: "length" | "chunked") =>
  new Promise<Sent>((resolve, reject) => {
    const head = Buffer.from(`{"pad":"`)
    const tail = Buffer.from(`"}`)
    const piece = Buffer.alloc(64 * 1024, "x")
    let written = 0
    let answered = false
    const req = http.request({
      socketPath: socket,
      agent: false,
      method: "POST",
      path: `/${method}`,
      headers: mode === "length" ? { "Content-Length": String(size) } : { "Transfer-Encoding": "chunked" }
    }, (res) => {
      answered = true
      const chunks: Array<Buffer> = []
      res.on("data", (c: Buffer) => chunks.push(c))
      res.on("end", () => {
        const raw = Buffer.concat(chunks).toString("utf8")
        let body: unknown
        try {
          body = JSON.parse(raw)
        } catch {
          body = raw
        }
        resolve({ status: res.statusCode ?? 0, body, written })
        req.destroy()
      })
      res.on("error", reject)
    })
    // once answered, the driver may close the connection on the rest of the body: EPIPE or a reset
    req.on("error", (e) => (answered ? undefined : resolve({ status: 0, body: undefined, written, error: e.message })))
    const write = (b: Buffer) => {
      written += b.length
      return req.write(b)
    }
    const pump = () => {
      while (!answered && !req.destroyed) {
        const left = size - written - tail.length
        if (written === 0) {
          if (!write(head)) return void req.once("drain", pump)
        } else if (left > 0) {
          if (!write(left >= piece.length ? piece : piece.subarray(0, left))) return void req.once("drain", pump)
        } else {
          write(tail)
          req.end()
          return
        }
      }
    }
    pump()
  })

/** The driver's resident and peak resident memory (VmRSS, VmHWM) in bytes. */
const memory = (pid: number) => {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8")
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)![1]) * 1024
  return { rss: kib("VmRSS"), peak: kib("VmHWM") }
}

describe("containerscale-docker request body limit", { timeout: 120_000 }, () => {
  const scope = netnsScope(`${prefix}-`)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-body-`))
  let driver: DockerDriver | undefined
  beforeAll(async () => {
    const node = scope.create("node")
    driver = await startDockerDriver({ name: `${prefix}drv`, socketDir: path.join(dir, "sock"), stateDir: path.join(dir, "state"), netns: netnsPath(node), binary })
  }, 60_000)
  afterAll(() =>
    cleanUpAll([
      () => driver?.dispose(),
      () => scope.dispose(),
      () => fs.rmSync(dir, { recursive: true, force: true })
    ]), 60_000)

  const activate = async () => {
    const r = await post(driver!.socket, "Plugin.Activate")
    expect(r).toMatchObject({ status: 200, body: { Implements: ["NetworkDriver", "IpamDriver"] } })
  }

  it("answers a 2 MiB body 413 with the driver's JSON error, Content-Length or chunked, and serves the next request", async () => {
    // (read and dropped past 1 MiB: a client writes all of a body this size before it reads the answer)
    await activate()
    for (const mode of ["length", "chunked"] as const) {
      const nd = await postLarge(driver!.socket, "Plugin.Activate", 2 * MiB, mode)
      expect([mode, nd.status, nd.body]).toEqual([mode, 413, { Err: expect.stringMatching(/Plugin.Activate: the request body is larger than 1 MiB/) }])
      await activate()
      const ipam = await postLarge(driver!.socket, "IpamDriver.GetCapabilities", 2 * MiB, mode)
      expect([mode, ipam.status, ipam.body]).toEqual([mode, 413, { Error: expect.stringMatching(/larger than 1 MiB/) }])
      expect((await post(driver!.socket, "IpamDriver.GetCapabilities")).body).toEqual({ RequiresMACAddress: false, RequiresRequestReplay: false })
    }
    // up to the cap is read as before
    const justUnder = await postLarge(driver!.socket, "Plugin.Activate", MiB, "chunked")
    expect(justUnder).toMatchObject({ status: 200, body: { Implements: ["NetworkDriver", "IpamDriver"] } })
  })

  it("does not read a large body: the driver's peak memory stays put and the client cannot write much of it", async () => {
    const pid = driver!.pid()
    await activate()
    const before = memory(pid)
    // refused on its Content-Length: only what the socket buffers took was written; the answer is
    // 413, unless the driver closed the connection on the body before the client read it
    const declared = await postLarge(driver!.socket, "NetworkDriver.CreateNetwork", 128 * MiB, "length")
    expect([413, 0]).toContain(declared.status)
    expect(declared.written).toBeLessThan(8 * MiB)
    // chunked: read up to 1 MiB, dropped up to 4 MiB more, then answered
    const chunked = await postLarge(driver!.socket, "NetworkDriver.CreateNetwork", 128 * MiB, "chunked")
    expect([413, 0]).toContain(chunked.status)
    expect(chunked.written).toBeLessThan(16 * MiB)
    await activate()
    const after = memory(pid)
    expect(after.peak - before.peak, `VmHWM ${before.peak} -> ${after.peak}, VmRSS ${before.rss} -> ${after.rss}`).toBeLessThan(32 * MiB)
  })
})

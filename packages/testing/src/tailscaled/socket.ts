import * as fs from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import * as path from "node:path"

/** True when something accepts connections on the unix socket `socketPath`. */
export const socketIsLive = (socketPath: string, timeoutMs = 1000): Promise<boolean> =>
  new Promise((resolve) => {
    const conn = net.createConnection(socketPath)
    const done = (live: boolean) => {
      conn.destroy()
      resolve(live)
    }
    conn.setTimeout(timeoutMs, () => done(false))
    conn.on("connect", () => done(true))
    conn.on("error", () => done(false))
  })

/**
 * Listens the way tailscaled does: refuses when a live daemon answers on the path, removes a stale
 * file, creates the parent directory (0755) and makes the socket 0666.
 */
export const listenUnix = async (server: http.Server, socketPath: string): Promise<void> => {
  if (await socketIsLive(socketPath)) throw new Error(`safesocket.Listen: ${socketPath}: address already in use`)
  fs.rmSync(socketPath, { force: true })
  fs.mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o755 })
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    // bind makes the socket file at once: with this umask it is 0666 before any client can connect
    const umask = process.umask(0o111)
    try {
      server.listen(socketPath, () => {
        server.off("error", reject)
        resolve()
      })
    } finally {
      process.umask(umask)
    }
  })
}

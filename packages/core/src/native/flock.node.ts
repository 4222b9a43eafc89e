import { createRequire } from "node:module"

let addon: { tryLock(fd: number): number } | undefined

/** flock(fd, LOCK_EX | LOCK_NB): 0 when taken, else the errno (EWOULDBLOCK while another holds it). */
export const tryLock = (fd: number): number => {
  addon ??= createRequire(import.meta.url)("../../native/build/flock.node")
  return addon!.tryLock(fd)
}

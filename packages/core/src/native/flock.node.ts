import { createRequire } from "node:module"

const addon = createRequire(import.meta.url)("../../native/build/flock.node") as {
  tryLock(fd: number): number
}

/** flock(fd, LOCK_EX | LOCK_NB): 0 when taken, else the errno (EWOULDBLOCK while another holds it). */
export const tryLock: (fd: number) => number = addon.tryLock

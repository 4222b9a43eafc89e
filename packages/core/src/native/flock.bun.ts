// Bun embeds the addon in a compiled executable only when it is imported statically.
// @ts-expect-error: a Node-API addon has no type declarations
import addon from "../../native/build/flock.node"

/** flock(fd, LOCK_EX | LOCK_NB): 0 when taken, else the errno (EWOULDBLOCK while another holds it). */
export const tryLock: (fd: number) => number = addon.tryLock

import type * as Ffi from "bun:ffi"

const LOCK_EX = 2
const LOCK_NB = 4

const open = () => {
  // Loaded on first use: importing bun:ffi up front costs every plugin call start-up time.
  const { dlopen, FFIType, read } = require("bun:ffi") as typeof Ffi
  const { symbols } = dlopen("libc.so.6", {
    flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    __errno_location: { args: [], returns: FFIType.ptr }
  })
  return (fd: number) => (symbols.flock(fd, LOCK_EX | LOCK_NB) === 0 ? 0 : read.i32(symbols.__errno_location()!, 0))
}
let flock: ((fd: number) => number) | undefined

/**
 * flock(fd, LOCK_EX | LOCK_NB): 0 when taken, else the errno (EWOULDBLOCK while another holds it).
 * Bun calls libc directly: loading a Node-API addon costs a compiled binary more start-up time.
 */
export const tryLock = (fd: number): number => (flock ??= open())(fd)

import { dlopen, FFIType, read } from "bun:ffi"

const LOCK_EX = 2
const LOCK_NB = 4

type Libc = ReturnType<typeof open>
const open = () =>
  dlopen("libc.so.6", {
    flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    __errno_location: { args: [], returns: FFIType.ptr }
  }).symbols
let libc: Libc | undefined

/**
 * flock(fd, LOCK_EX | LOCK_NB): 0 when taken, else the errno (EWOULDBLOCK while another holds it).
 * Bun calls libc directly: loading a Node-API addon costs a compiled binary more start-up time.
 */
export const tryLock = (fd: number): number => {
  libc ??= open()
  return libc.flock(fd, LOCK_EX | LOCK_NB) === 0 ? 0 : read.i32(libc.__errno_location()!, 0)
}

import { Data } from "effect"

/**
 * Every error of the core carries a CNI error code (0-99 from the spec, 100+ ours) and a message
 * that says what to fix. Adapters map the code to their own format (CNI error JSON, Docker's
 * `Err`, Netavark's `error`). They are `Data.TaggedError`s: a `Schema.TaggedError` class costs a
 * compiled plugin about 8 ms more start-up per process, and no error crosses a wire as a schema.
 */
export const CniCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnvironment: 4,
  IoFailure: 5,
  DecodeFailure: 6,
  InvalidNetworkConfig: 7,
  TryAgainLater: 11,
  NotAvailable: 50,
  Internal: 100,
  StoreCorrupt: 101,
  AddressNotInPool: 102,
  AddressInUse: 103,
  CheckFailed: 104,
  NetlinkFailed: 105,
  AlreadyAttached: 106,
  MemberFailed: 107
} as const

interface Fields {
  readonly message: string
  readonly details?: string | undefined
}

export class IncompatibleVersion extends Data.TaggedError("IncompatibleVersion")<Fields> {
  get cniCode(): number {
    return CniCode.IncompatibleVersion
  }
}

export class InvalidEnvironment extends Data.TaggedError("InvalidEnvironment")<Fields> {
  get cniCode(): number {
    return CniCode.InvalidEnvironment
  }
}

export class IoFailure extends Data.TaggedError("IoFailure")<Fields> {
  get cniCode(): number {
    return CniCode.IoFailure
  }
}

export class DecodeFailure extends Data.TaggedError("DecodeFailure")<Fields> {
  get cniCode(): number {
    return CniCode.DecodeFailure
  }
}

export class InvalidNetworkConfig extends Data.TaggedError("InvalidNetworkConfig")<Fields> {
  get cniCode(): number {
    return CniCode.InvalidNetworkConfig
  }
}

/** No free address is left in a range set. Code 11: addresses come back when containers go. */
export class PoolExhausted extends Data.TaggedError("PoolExhausted")<Fields> {
  get cniCode(): number {
    return CniCode.TryAgainLater
  }
}

/** Another process held the store's lock for longer than the lock timeout. */
export class StoreBusy extends Data.TaggedError("StoreBusy")<Fields> {
  get cniCode(): number {
    return CniCode.TryAgainLater
  }
}

export class StoreCorrupt extends Data.TaggedError("StoreCorrupt")<Fields> {
  get cniCode(): number {
    return CniCode.StoreCorrupt
  }
}

export class AddressNotInPool extends Data.TaggedError("AddressNotInPool")<Fields> {
  get cniCode(): number {
    return CniCode.AddressNotInPool
  }
}

export class AddressInUse extends Data.TaggedError("AddressInUse")<Fields> {
  get cniCode(): number {
    return CniCode.AddressInUse
  }
}

/** CHECK found the attachment different from what ADD set up. */
export class CheckFailed extends Data.TaggedError("CheckFailed")<Fields> {
  get cniCode(): number {
    return CniCode.CheckFailed
  }
}

/** STATUS: the plugin cannot serve ADD now. */
export class NotAvailable extends Data.TaggedError("NotAvailable")<Fields> {
  get cniCode(): number {
    return CniCode.NotAvailable
  }
}

/** A link, address, route or sysctl change failed; the message names the step and iproute2's reason. */
export class NetlinkFailure extends Data.TaggedError("NetlinkFailure")<Fields & {
  /** the op of the batch step that failed, when one did */
  readonly failedOp?: string | undefined
  /** the kernel said the object already exists (EEXIST) */
  readonly exists?: boolean | undefined
}> {
  get cniCode(): number {
    return CniCode.NetlinkFailed
  }
}

/** ADD of an attachment whose interfaces are already there: DEL it first. */
export class AlreadyAttached extends Data.TaggedError("AlreadyAttached")<Fields> {
  get cniCode(): number {
    return CniCode.AlreadyAttached
  }
}

/** Member mode: tailscaled could not be started, brought up or stopped; the message says why. */
export class MemberFailure extends Data.TaggedError("MemberFailure")<Fields> {
  get cniCode(): number {
    return CniCode.MemberFailed
  }
}

export type IpamError =
  | InvalidNetworkConfig
  | InvalidEnvironment
  | PoolExhausted
  | StoreBusy
  | StoreCorrupt
  | AddressNotInPool
  | AddressInUse
  | IoFailure

export type CoreError = IpamError | IncompatibleVersion | DecodeFailure

/** Turns a thrown Node error from a file operation into an IoFailure that names the path. */
export const ioFailure = (action: string, path: string) => (cause: unknown): IoFailure => {
  const code = (cause as { code?: string } | undefined)?.code
  const reason = cause instanceof Error ? cause.message : String(cause)
  const hint = code === "EACCES" || code === "EPERM"
    ? " Run as root or give the plugin's user access to this path."
    : code === "ENOSPC"
    ? " Free disk space on that filesystem."
    : code === "EROFS"
    ? " The filesystem is read-only: point dataDir at a writable directory."
    : ""
  return new IoFailure({ message: `cannot ${action} ${path}: ${reason}.${hint}` })
}

import { Data } from "effect"

/** A failure of containerscalectl: its message goes to stderr and `exitCode` ends the process. */
export class CtlError extends Data.TaggedError("CtlError")<{
  readonly message: string
  /** 2: the command line is wrong; 1: anything else (a failed check too, with an empty message) */
  readonly exitCode: 1 | 2
}> {
  static usage(message: string) {
    return new CtlError({ message, exitCode: 2 })
  }
  static failure(message: string) {
    return new CtlError({ message, exitCode: 1 })
  }
}


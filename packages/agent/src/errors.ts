import { Data } from "effect"

/** A step of the agent that failed; the message says what to fix. Loops log it and retry. */
export class AgentFailure extends Data.TaggedError("AgentFailure")<{ readonly message: string }> {}

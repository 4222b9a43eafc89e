export * from "./binary.ts"
export * from "./options.ts"
export * from "./plugin.ts"
export * from "./protocol.ts"

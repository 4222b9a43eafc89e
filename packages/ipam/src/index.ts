export * from "./plugin.ts"

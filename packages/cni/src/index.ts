export * from "./delegate.ts"
export * from "./result.ts"
export * from "./skel.ts"
export * from "./version.ts"

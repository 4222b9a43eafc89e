export const supportedVersions = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] as const

export type Command = "ADD" | "DEL" | "CHECK" | "STATUS" | "GC" | "VERSION"

const parse = (v: string): [number, number, number] | undefined => {
  const m = /^(\d+)\.(\d+)\.(\d+)$/.exec(v)
  return m === null ? undefined : [Number(m[1]), Number(m[2]), Number(m[3])]
}

export const compareVersions = (a: string, b: string): number => {
  const pa = parse(a) ?? [0, 0, 0]
  const pb = parse(b) ?? [0, 0, 0]
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return pa[i]! - pb[i]!
  return 0
}

export const isSupported = (v: string): boolean => (supportedVersions as ReadonlyArray<string>).includes(v)

/** The lowest config version in which each command exists. */
export const commandSince: Record<Command, string> = {
  ADD: "0.1.0",
  DEL: "0.1.0",
  VERSION: "0.1.0",
  CHECK: "0.4.0",
  STATUS: "1.1.0",
  GC: "1.1.0"
}

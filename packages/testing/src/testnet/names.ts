const maxLabelLength = 63

/** A hostname as a MagicDNS label: lowercase, every character outside [a-z0-9-] replaced by "-". */
export const dnsLabelOf = (hostname: string): string => {
  const label = hostname.toLowerCase().replace(/[^a-z0-9-]/g, "-").replace(/^-+|-+$/g, "").slice(0, maxLabelLength)
  return label === "" ? "node" : label
}

export const isDnsLabel = (name: string): boolean => name.length <= maxLabelLength && /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(name)

/** `label`, or `label-1`, `label-2`... the first one not in `taken`. */
export const uniqueName = (label: string, taken: ReadonlySet<string>): string => {
  if (!taken.has(label)) return label
  for (let n = 1; ; n++) {
    const suffix = `-${n}`
    const candidate = `${label.slice(0, maxLabelLength - suffix.length)}${suffix}`
    if (!taken.has(candidate)) return candidate
  }
}

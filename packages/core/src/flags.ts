/**
 * The long `--name value` / `--name=value` flags of the project's long-running binaries (the
 * agent, the Docker driver). Prints the usage and exits 0 for `--help`, prints the problem and
 * the usage and exits 2 for an unknown flag or a missing value.
 */
export const readLongFlags = <K extends string>(
  argv: ReadonlyArray<string>,
  names: Readonly<Record<string, K>>,
  usage: string
): Partial<Record<K, string>> => {
  const flags: Partial<Record<K, string>> = {}
  const refuse = (problem: string): never => {
    process.stderr.write(`${problem}\n\n${usage}`)
    process.exit(2)
  }
  for (let i = 0; i < argv.length; i++) {
    const [name, inline] = argv[i]!.split(/=(.*)/s, 2) as [string, string | undefined]
    if (name === "--help" || name === "-h") {
      process.stdout.write(usage)
      process.exit(0)
    }
    const key = names[name]
    if (key === undefined) return refuse(`unknown argument ${name}`)
    const value = inline ?? argv[++i]
    if (value === undefined || value === "") return refuse(`${name} needs a value`)
    flags[key] = value
  }
  return flags
}

import { Effect, Redacted } from "effect"

/**
 * One table of member-network settings for every adapter's settings test: each adapter spells
 * the options its own way (a CNI config, Docker's `-o containerscale.*`, Podman's `-o`), and each
 * must resolve them to exactly what the core resolves from the options themselves: the same
 * prefs, the same timeout and state directory, and the same auth key when several are given.
 */

/** Options by their runtime-neutral names (the core's `MemberOptions`). */
export type Options = Readonly<Record<string, string | number | boolean | ReadonlyArray<string>>>

export interface Row {
  readonly what: string
  readonly options: Options
  readonly env: Readonly<Record<string, string>>
  /** the key that wins; undefined when none is given */
  readonly key?: string | undefined
  /** the resolution fails, and says this */
  readonly fails?: string | undefined
}

// per test process: the adapters' settings tests run side by side, and each removes its files at the end
export const KEY_FILE = `/tmp/containerscale-settings-table-${process.pid}.key`
export const KEY_FILE_CONTENT = "key-from-named-file"
export const DEFAULT_KEY_FILE = `/tmp/containerscale-settings-table-default-${process.pid}.key`
export const DEFAULT_KEY_FILE_CONTENT = "key-from-default-file"

const everything: Options = {
  hostname: "web-1",
  tags: ["tag:web", "db"],
  loginServer: "https://headscale.example.com",
  ephemeral: false,
  acceptDns: true,
  acceptRoutes: true,
  userspace: true,
  magicDns: false,
  tailscaledPath: "/usr/local/bin/tailscaled",
  timeoutSeconds: 45,
  stateDir: "/var/lib/containerscale-table"
}

export const ROWS: ReadonlyArray<Row> = [
  {
    what: "every option; the variable the network names wins over the default variable",
    options: { ...everything, authKeyEnv: "MY_KEY" },
    env: { MY_KEY: "key-from-named-variable", CONTAINERSCALE_AUTH_KEY: "key-from-default-variable" },
    key: "key-from-named-variable"
  },
  {
    what: "the file the network names wins over both defaults",
    options: { authKeyFile: KEY_FILE },
    env: { CONTAINERSCALE_AUTH_KEY: "key-from-default-variable", CONTAINERSCALE_AUTH_KEY_FILE: DEFAULT_KEY_FILE },
    key: KEY_FILE_CONTENT
  },
  {
    what: "a literal key in the network wins over both defaults",
    options: { authKey: "key-literal" },
    env: { CONTAINERSCALE_AUTH_KEY: "key-from-default-variable", CONTAINERSCALE_AUTH_KEY_FILE: DEFAULT_KEY_FILE },
    key: "key-literal"
  },
  {
    what: "no source in the network: CONTAINERSCALE_AUTH_KEY before CONTAINERSCALE_AUTH_KEY_FILE",
    options: { tags: ["tag:a"] },
    env: { CONTAINERSCALE_AUTH_KEY: "key-from-default-variable", CONTAINERSCALE_AUTH_KEY_FILE: DEFAULT_KEY_FILE },
    key: "key-from-default-variable"
  },
  {
    what: "only CONTAINERSCALE_AUTH_KEY_FILE",
    options: {},
    env: { CONTAINERSCALE_AUTH_KEY_FILE: DEFAULT_KEY_FILE },
    key: DEFAULT_KEY_FILE_CONTENT
  },
  { what: "no key anywhere", options: { hostname: "x" }, env: {}, key: undefined },
  {
    what: "two sources in the network",
    options: { authKey: "key-literal", authKeyEnv: "MY_KEY" },
    env: { MY_KEY: "k" },
    fails: "give one auth key source"
  },
  {
    what: "a named variable that is not set is an error, not a fall-back",
    options: { authKeyEnv: "NOT_SET" },
    env: { CONTAINERSCALE_AUTH_KEY: "key-from-default-variable" },
    fails: "NOT_SET, which is not set"
  },
  {
    what: "Tailscale SSH is refused: its sessions would run on the node, outside the container",
    options: { ssh: true },
    env: { CONTAINERSCALE_AUTH_KEY: "key-from-default-variable" },
    fails: "Tailscale SSH is refused in member mode"
  },
  {
    what: "SSH turned off is the default, and accepted",
    options: { ssh: false },
    env: { CONTAINERSCALE_AUTH_KEY: "key-from-default-variable" },
    key: "key-from-default-variable"
  },
  {
    what: "a tailscaled under /run, which the daemon's private /run hides",
    options: { tailscaledPath: "/run/tailscale/tailscaled" },
    env: { CONTAINERSCALE_AUTH_KEY: "key-from-default-variable" },
    fails: "must not be under /run"
  },
  {
    what: "a relative key file",
    options: { authKeyFile: "relative/key" },
    env: {},
    fails: "must be an absolute path"
  }
]

/** An option's value as a string option (`-o name=value`). */
export const asString = (value: Options[string]): string =>
  typeof value === "string" ? value : Array.isArray(value) ? value.join(",") : String(value)

/** What a resolution gave: the settings (the key as its text), or the error's message. */
export type Outcome = { readonly settings: Readonly<Record<string, unknown>> } | { readonly error: string }

/**
 * Fails unless the adapter's outcome is the core's for the row: the same settings (the names of
 * options in messages aside) and the row's key, or errors that both say the row's `fails`.
 */
export const expectSame = (row: Row, core: Outcome, adapter: Outcome): void => {
  const show = (o: Outcome) => JSON.stringify(o)
  if (row.fails !== undefined) {
    for (const [who, o] of [["core", core], ["adapter", adapter]] as const) {
      if (!("error" in o) || !o.error.includes(row.fails)) throw new Error(`${row.what}: the ${who} should fail with "${row.fails}", got ${show(o)}`)
    }
    return
  }
  if (!("settings" in core) || !("settings" in adapter)) throw new Error(`${row.what}: core ${show(core)}, adapter ${show(adapter)}`)
  if (core.settings["authKey"] !== row.key) throw new Error(`${row.what}: the core chose ${String(core.settings["authKey"])}, the table ${row.key}`)
  if (show(core) !== show(adapter)) throw new Error(`${row.what}: the adapter resolved\n${show(adapter)}\nthe core\n${show(core)}`)
}

/** Runs a resolution into an outcome. */
export const outcomeOf = (
  resolution: Effect.Effect<{ readonly authKey: Redacted.Redacted<string> | undefined }, { readonly message: string }>
): Effect.Effect<Outcome> =>
  resolution.pipe(
    Effect.map((s): Outcome => ({ settings: { ...s, authKey: s.authKey === undefined ? undefined : Redacted.value(s.authKey) } })),
    Effect.catch((error) => Effect.succeed<Outcome>({ error: error.message }))
  )

/** Writes the key files the rows name; returns how to remove them. */
export const writeKeyFiles = (fs: { writeFileSync: (f: string, d: string, o: object) => void; rmSync: (f: string, o: object) => void }) => {
  fs.writeFileSync(KEY_FILE, `${KEY_FILE_CONTENT}\n`, { mode: 0o600 })
  fs.writeFileSync(DEFAULT_KEY_FILE, `${DEFAULT_KEY_FILE_CONTENT}\n`, { mode: 0o600 })
  return () => {
    fs.rmSync(KEY_FILE, { force: true })
    fs.rmSync(DEFAULT_KEY_FILE, { force: true })
  }
}

import { Effect } from "effect"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import { runCommand } from "./command.ts"

/** A name prefix that no other test run uses at the same time: `cst` and 6 hex digits by default. */
export const uniquePrefix = (base = "cst"): string => `${base}${randomBytes(3).toString("hex")}`

export const netnsPath = (name: string): string => `/run/netns/${name}`

export const netnsExists = (name: string): boolean => fs.existsSync(netnsPath(name))

/** Creates a named network namespace with its loopback up; returns its path. */
export const createNetns = (name: string): string => {
  runCommand("ip", ["netns", "add", name])
  try {
    runCommand("ip", ["-n", name, "link", "set", "lo", "up"])
  } catch (e) {
    deleteNetns(name)
    throw e
  }
  return netnsPath(name)
}

/** Deletes a named network namespace; does nothing when it is already gone. */
export const deleteNetns = (name: string): void => {
  if (!netnsExists(name)) return
  try {
    runCommand("ip", ["netns", "delete", name])
  } catch (e) {
    if (netnsExists(name)) throw e
  }
}

/** Names of the namespaces `ip netns` knows, optionally only those starting with `prefix`. */
export const listNetns = (prefix = ""): Array<string> => {
  const out = runCommand("ip", ["-json", "netns", "list"]).trim()
  const list = out === "" ? [] : (JSON.parse(out) as Array<{ name: string }>)
  return list.map((n) => n.name).filter((n) => n.startsWith(prefix))
}

/** Runs `ip [-n NETNS] -json ARGS...` and returns the parsed output (`ip` prints nothing for an empty list). */
export const ipJson = <A = Array<Record<string, unknown>>>(netns: string | undefined, args: ReadonlyArray<string>): A => {
  const out = runCommand("ip", [...(netns === undefined ? [] : ["-n", netns]), "-json", ...args]).trim()
  return JSON.parse(out === "" ? "[]" : out) as A
}

export interface InterfaceAddress {
  readonly family: "inet" | "inet6"
  readonly local: string
  readonly prefixlen: number
}

/** The addresses of one interface as `ip -json addr` shows them, as "10.0.0.2/24" strings. */
export const interfaceAddresses = (netns: string | undefined, ifname: string, family?: "inet" | "inet6"): Array<string> => {
  const links = ipJson<Array<{ addr_info?: Array<InterfaceAddress> }>>(netns, ["addr", "show", "dev", ifname])
  return links.flatMap((l) => l.addr_info ?? [])
    .filter((a) => family === undefined || a.family === family)
    .map((a) => `${a.local}/${a.prefixlen}`)
}

/** Names of the links in a namespace (the current one when `netns` is undefined) that start with `prefix`. */
export const listLinks = (netns: string | undefined, prefix = ""): Array<string> =>
  ipJson<Array<{ ifname: string }>>(netns, ["link", "show"]).map((l) => l.ifname).filter((n) => n.startsWith(prefix))

/**
 * A set of namespaces that share a prefix and go away together. `dispose` deletes every one it
 * made and any other namespace left with the prefix, so a failed test leaves nothing behind.
 */
export interface NetnsScope {
  readonly prefix: string
  /** Creates `<prefix><suffix>` and returns its name. */
  readonly create: (suffix: string) => string
  readonly dispose: () => void
}

export const netnsScope = (prefix: string = `${uniquePrefix()}-`): NetnsScope => {
  const made = new Set<string>()
  return {
    prefix,
    create: (suffix) => {
      const name = `${prefix}${suffix}`
      made.add(name)
      createNetns(name)
      return name
    },
    dispose: () => {
      const errors: Array<unknown> = []
      for (const name of new Set([...made, ...listNetns(prefix)])) {
        try {
          deleteNetns(name)
        } catch (e) {
          errors.push(e)
        }
      }
      made.clear()
      if (errors.length > 0) throw new AggregateError(errors, `could not delete every namespace with prefix ${prefix}`)
    }
  }
}

/** Runs `f` with freshly created namespaces named `names` and deletes them afterwards, also when `f` fails. */
export const withNetns = async <A>(names: ReadonlyArray<string>, f: (paths: Array<string>) => A | Promise<A>): Promise<A> => {
  const created: Array<string> = []
  try {
    for (const name of names) {
      createNetns(name)
      created.push(name)
    }
    return await f(names.map(netnsPath))
  } finally {
    for (const name of created) deleteNetns(name)
  }
}

/** The Effect form: a namespace that lives as long as the surrounding Scope; yields its path. */
export const scopedNetns = (name: string) =>
  Effect.acquireRelease(Effect.sync(() => createNetns(name)), () => Effect.sync(() => deleteNetns(name)))

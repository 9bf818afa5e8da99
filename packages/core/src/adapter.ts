import {
  CORE_PACKAGE,
  closedShutdownOption,
  invalidArgument,
  invalidOptionRange,
  invalidOptionType,
  unknownOption,
} from './errors.js'
import { resolveOptions, SHUTDOWN_OPTION_NAMES, type ShutdownOptions } from './options.js'
import { createShutdownFrom, isShutdown, type Shutdown } from './shutdown.js'

/** `health: true` serves `/readyz` and `/livez`; an object picks the paths. */
export type HealthOption = boolean | { readyPath?: string | undefined; livePath?: string | undefined }

/** Options every adapter takes: the core options, or an existing `shutdown`, plus `health`. */
export interface AdapterOptions extends ShutdownOptions {
  /** Use this Shutdown (one for several apps or servers) instead of creating one; core options are then not allowed. */
  shutdown?: Shutdown | undefined
  /** Serve `GET`/`HEAD` readiness (200 while serving, 503 from the signal on) and liveness (always 200) probes. Default false. */
  health?: HealthOption | undefined
}

/** Resolved health paths, or `undefined` when probes are off. */
export interface HealthPaths {
  /** Path of the readiness probe: 200 while serving, 503 from the signal on. */
  readonly readyPath: string
  /** Path of the liveness probe: 200 until the process exits. */
  readonly livePath: string
}

/** An answer an adapter writes raw. */
export interface RawAnswer {
  /** HTTP status code. */
  readonly status: number
  /** Response headers, lower-case names. */
  readonly headers: Readonly<Record<string, string>>
  /** The whole body (its length is in `content-length`). */
  readonly body: string
}

/**
 * Validates adapter options at creation time and returns the Shutdown to use and the health paths.
 * Shared by every adapter so the rules (and messages) are the same everywhere. `adapter` is the
 * package the user called, named at the start of every message (`@lameduck/express: option
 * "timeoutMs" must be …`); default `@lameduck/core`. Errors thrown later by the Shutdown's own
 * methods name `@lameduck/core`.
 * @throws TypeError or RangeError with `code: 'ERR_LAMEDUCK_INVALID_OPTION'`; a TypeError with
 * `code: 'ERR_LAMEDUCK_INVALID_ARGUMENT'` when `adapter` is not a non-empty string.
 */
export function resolveAdapterOptions(
  options: AdapterOptions | undefined,
  adapter: string = CORE_PACKAGE,
): {
  shutdown: Shutdown
  health: HealthPaths | undefined
} {
  if (typeof adapter !== 'string' || adapter === '') {
    throw invalidArgument(
      'resolveAdapterOptions',
      'adapter',
      'a package name such as "@lameduck/express"',
      adapter,
    )
  }
  if (options === undefined) options = {}
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw invalidOptionType('options', 'an object', options, adapter)
  }
  const { shutdown: given, health, ...core } = options
  const health_ = resolveHealth(health, adapter)
  if (given !== undefined) {
    if (!isShutdown(given))
      throw invalidOptionType('shutdown', 'a Shutdown from createShutdown()', given, adapter)
    if (given.state === 'closing' || given.state === 'closed')
      throw closedShutdownOption(given.state, adapter)
    // A key present but undefined means "not set", as everywhere else (`??` defaults).
    const extra = Object.keys(core).find(
      (key) =>
        (SHUTDOWN_OPTION_NAMES as readonly string[]).includes(key) &&
        core[key as keyof typeof core] !== undefined,
    )
    if (extra !== undefined) {
      throw invalidOptionType(
        extra,
        'set on the given "shutdown" (createShutdown) rather than beside it',
        core[extra as keyof typeof core],
        adapter,
      )
    }
  }
  // Unknown keys are reported against the full list, adapter keys included.
  const resolved = resolveOptions(core, ['shutdown', 'health'], adapter)
  return { shutdown: given ?? createShutdownFrom(resolved), health: health_ }
}

/** A request target in absolute form: scheme, authority, then the path (group 1), if any. */
const ABSOLUTE_FORM = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/]*(\/.*)?$/

/**
 * A path a request's target can carry as it is: visible ASCII, without `?` or `#` (a query or a
 * fragment is never part of the path compared) — clients percent-encode spaces and anything else.
 */
const PROBE_PATH = /^\/[\x21\x22\x24-\x3e\x40-\x7e]*$/

function resolveHealth(value: unknown, source: string): HealthPaths | undefined {
  if (value === undefined || value === false) return undefined
  if (value === true) return { readyPath: '/readyz', livePath: '/livez' }
  const expected = 'true, false or an object { readyPath?, livePath? }'
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw invalidOptionType('health', expected, value, source)
  const paths = value as Record<string, unknown>
  for (const key of Object.keys(paths)) {
    if (key !== 'readyPath' && key !== 'livePath')
      throw unknownOption(`health.${key}`, ['health.readyPath', 'health.livePath'], source)
  }
  const path = (name: 'readyPath' | 'livePath', fallback: string): string => {
    const given = paths[name]
    if (given === undefined) return fallback
    if (typeof given !== 'string')
      throw invalidOptionType(`health.${name}`, 'a path starting with "/"', given, source)
    if (!given.startsWith('/'))
      throw invalidOptionRange(`health.${name}`, 'a path starting with "/"', given, source)
    // Compared with the request's raw path: anything a client would send percent-encoded, and a
    // query or fragment, would never match.
    if (!PROBE_PATH.test(given))
      throw invalidOptionRange(
        `health.${name}`,
        'a path as a request carries it (visible ASCII; no query, fragment or spaces: percent-encode them)',
        given,
        source,
      )
    return given
  }
  const resolved = { readyPath: path('readyPath', '/readyz'), livePath: path('livePath', '/livez') }
  if (resolved.readyPath === resolved.livePath) {
    throw invalidOptionRange(
      'health.livePath',
      `a path other than readyPath ("${resolved.readyPath}")`,
      resolved.livePath,
      source,
    )
  }
  return resolved
}

/**
 * The probe answer for `method` and `url`, or `undefined` when the request is not a probe. Probes
 * bypass the gate and are not counted: readiness 200 while serving and 503 from the signal on
 * (`{"status":"<state>"}`), liveness 200 for as long as it can be reached.
 */
export function healthAnswer(
  shutdown: Shutdown,
  health: HealthPaths | undefined,
  method: string | undefined,
  url: string | undefined,
): RawAnswer | undefined {
  if (health === undefined || (method !== 'GET' && method !== 'HEAD') || url === undefined) return undefined
  const query = url.indexOf('?')
  let path = query === -1 ? url : url.slice(0, query)
  // Absolute form (`GET http://host/readyz`), which servers must accept: the path after the authority.
  if (!path.startsWith('/')) path = ABSOLUTE_FORM.exec(path)?.[1] ?? path
  let status: number
  if (path === health.readyPath) status = shutdown.isReady ? 200 : 503
  else if (path === health.livePath) status = 200
  else return undefined
  const body = JSON.stringify({ status: path === health.livePath ? 'alive' : shutdown.state })
  return {
    status,
    headers: {
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(body)),
      'cache-control': 'no-store',
    },
    body, // Node sends no body for HEAD, only the length
  }
}

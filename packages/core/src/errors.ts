/** Error codes thrown by `@lameduck/*`. Every code is listed in the core README. */
export type LameduckErrorCode =
  /** An option has the wrong type, is out of range, or is unknown. Thrown at creation time. */
  | 'ERR_LAMEDUCK_INVALID_OPTION'
  /** An argument of a method call (a label, a hook, a server) is not what the method takes. */
  | 'ERR_LAMEDUCK_INVALID_ARGUMENT'
  /** `track()`, `onDrain()`, `onClose()` or `attach()` was called too late in the shutdown. */
  | 'ERR_LAMEDUCK_CLOSED'

/** The kind of every error `@lameduck/*` throws: a built-in `TypeError` or `RangeError` with a `code`. */
export type LameduckError = (TypeError | RangeError | Error) & { code: LameduckErrorCode }

/**
 * The package named at the start of a message: `@lameduck/core` for the core's own errors, the
 * adapter the user called (`@lameduck/express`, …) for that adapter's option errors.
 */
export const CORE_PACKAGE = '@lameduck/core'

function withCode<E extends Error>(error: E, code: LameduckErrorCode): E & { code: LameduckErrorCode } {
  return Object.assign(error, { code })
}

/** A value of the wrong kind: `TypeError` with `ERR_LAMEDUCK_INVALID_OPTION`, from `source`. */
export function invalidOptionType(
  name: string,
  expected: string,
  received: unknown,
  source: string = CORE_PACKAGE,
): LameduckError {
  return withCode(
    new TypeError(`${source}: option "${name}" must be ${expected}; received ${describe(received)}.`),
    'ERR_LAMEDUCK_INVALID_OPTION',
  )
}

/** A value of the right kind out of range: `RangeError` with `ERR_LAMEDUCK_INVALID_OPTION`, from `source`. */
export function invalidOptionRange(
  name: string,
  expected: string,
  received: unknown,
  source: string = CORE_PACKAGE,
): LameduckError {
  return withCode(
    new RangeError(`${source}: option "${name}" must be ${expected}; received ${describe(received)}.`),
    'ERR_LAMEDUCK_INVALID_OPTION',
  )
}

/** An option name nobody reads, usually a typo, from `source`. */
export function unknownOption(
  name: string,
  known: readonly string[],
  source: string = CORE_PACKAGE,
): LameduckError {
  const guess = closest(name, known)
  const hint = guess === undefined ? `known options: ${known.join(', ')}` : `did you mean "${guess}"?`
  return withCode(
    new TypeError(`${source}: unknown option "${name}"; ${hint}`),
    'ERR_LAMEDUCK_INVALID_OPTION',
  )
}

/** A method argument of the wrong kind. */
export function invalidArgument(
  method: string,
  name: string,
  expected: string,
  received: unknown,
): LameduckError {
  return withCode(
    new TypeError(
      `${CORE_PACKAGE}: ${method}() argument "${name}" must be ${expected}; received ${describe(received)}.`,
    ),
    'ERR_LAMEDUCK_INVALID_ARGUMENT',
  )
}

/** A registration after the phase it belongs to has begun. */
export function closedError(method: string, state: string): LameduckError {
  return withCode(
    new Error(`${CORE_PACKAGE}: ${method}() cannot be called once the shutdown is ${state}.`),
    'ERR_LAMEDUCK_CLOSED',
  )
}

/** `"30s" (string)`, `NaN (number)`, `null`: what arrived, short enough for one line. */
export function describe(value: unknown): string {
  if (value === null) return 'null'
  if (value === undefined) return 'undefined'
  if (typeof value === 'string')
    return `${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)} (string)`
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') {
    return `${String(value)} (${typeof value})`
  }
  if (typeof value === 'function') return `a function`
  if (Array.isArray(value)) return `an array`
  if (typeof value === 'symbol') return `${String(value)} (symbol)`
  const name = (value as object).constructor?.name
  return name && name !== 'Object' ? `an instance of ${name}` : 'an object'
}

/** The `shutdown` option of an adapter, given a Shutdown that is closing or closed already. */
export function closedShutdownOption(state: string, source: string): LameduckError {
  return withCode(
    new Error(
      `${source}: option "shutdown" is a Shutdown that is ${state} already; it would refuse every request (create the middleware before the shutdown begins)`,
    ),
    'ERR_LAMEDUCK_CLOSED',
  )
}

/** A key of a method's options object that the method does not read, usually a typo. */
export function unknownArgumentKey(method: string, key: string, known: readonly string[]): LameduckError {
  const guess = closest(key, known)
  const hint = guess === undefined ? `known: ${known.join(', ')}` : `did you mean "${guess}"?`
  return withCode(
    new TypeError(`${CORE_PACKAGE}: ${method}() argument "options" has an unknown key "${key}"; ${hint}`),
    'ERR_LAMEDUCK_INVALID_ARGUMENT',
  )
}

function closest(name: string, known: readonly string[]): string | undefined {
  let best: string | undefined
  let bestScore = Number.POSITIVE_INFINITY
  const lower = name.toLowerCase()
  for (const candidate of known) {
    const c = candidate.toLowerCase()
    // A name that is a prefix of the other (a missing unit suffix: "timeout" for "timeoutMs") is
    // always a candidate; anything else only within a few edits.
    const isPrefix = c.startsWith(lower) || lower.startsWith(c)
    const score = isPrefix ? Math.abs(c.length - lower.length) : editDistance(lower, c)
    if (!isPrefix && score > Math.max(2, Math.floor(name.length / 3))) continue
    if (score < bestScore) {
      bestScore = score
      best = candidate
    }
  }
  return best
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1)
      current[j] = Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution)
    }
    previous = current
  }
  return previous[b.length] ?? 0
}

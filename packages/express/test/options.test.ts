import * as core from '@lameduck/core'
import { describe, expect, it } from 'vitest'
import * as adapter from '../src/index.ts'
import { createShutdown, graceful } from '../src/index.ts'

function thrown(run: () => unknown): { name: string; code: unknown; message: string } {
  try {
    run()
  } catch (error) {
    const { name, message, code } = error as Error & { code?: unknown }
    return { name, code, message }
  }
  throw new Error('expected a throw')
}

describe('graceful() options', () => {
  it('rejects a bad core option when graceful() is called, not on the first request', () => {
    expect(thrown(() => graceful({ timeoutMs: '30s' as never }))).toEqual({
      name: 'TypeError',
      code: 'ERR_LAMEDUCK_INVALID_OPTION',
      message:
        '@lameduck/express: option "timeoutMs" must be a finite number of milliseconds >= 0; received "30s" (string).',
    })
    expect(thrown(() => graceful({ lateRequests: 'drop' as never }))).toEqual({
      name: 'RangeError',
      code: 'ERR_LAMEDUCK_INVALID_OPTION',
      message:
        '@lameduck/express: option "lateRequests" must be one of "serve", "refuse"; received "drop" (string).',
    })
  })

  it('rejects unknown keys with a hint', () => {
    expect(thrown(() => graceful({ timeout: 1_000 } as never)).message).toBe(
      '@lameduck/express: unknown option "timeout"; did you mean "timeoutMs"?',
    )
  })

  it('rejects a bad health option', () => {
    expect(thrown(() => graceful({ health: 'yes' as never })).message).toBe(
      '@lameduck/express: option "health" must be true, false or an object { readyPath?, livePath? }; received "yes" (string).',
    )
    expect(thrown(() => graceful({ health: { readyPath: 'readyz' } }))).toMatchObject({
      name: 'RangeError',
      code: 'ERR_LAMEDUCK_INVALID_OPTION',
    })
  })

  it('uses a given Shutdown, and refuses core options beside it', () => {
    const shutdown = createShutdown({ signals: false, logger: false })
    const one = graceful({ shutdown })
    const two = graceful({ shutdown, health: true })
    expect(one.shutdown).toBe(shutdown)
    expect(two.shutdown).toBe(shutdown)
    expect(thrown(() => graceful({ shutdown, timeoutMs: 1 })).message).toBe(
      '@lameduck/express: option "timeoutMs" must be set on the given "shutdown" (createShutdown) rather than beside it; received 1 (number).',
    )
    expect(thrown(() => graceful({ shutdown: {} as never })).message).toBe(
      '@lameduck/express: option "shutdown" must be a Shutdown from createShutdown(); received an object.',
    )
  })

  it("leaves @lameduck/core on the errors of the Shutdown's own methods", () => {
    const mw = graceful({ signals: false, logger: false })
    expect(thrown(() => mw.shutdown.onClose('', () => {}))).toEqual({
      name: 'TypeError',
      code: 'ERR_LAMEDUCK_INVALID_ARGUMENT',
      message: '@lameduck/core: onClose() argument "label" must be a non-empty string; received "" (string).',
    })
  })

  it('returns a named three-argument middleware (four would make Express treat it as an error handler) with its own Shutdown', () => {
    const mw = graceful({ signals: false, logger: false })
    expect(mw.name).toBe('gracefulMiddleware')
    expect(mw.length).toBe(3)
    expect(core.isShutdown(mw.shutdown)).toBe(true)
    expect(mw.shutdown.state).toBe('serving')
    expect(graceful({ signals: false, logger: false }).shutdown).not.toBe(mw.shutdown)
  })

  it("re-exports the core's public API", () => {
    const ours: Record<string, unknown> = { ...adapter }
    const theirs: Record<string, unknown> = { ...core }
    for (const name of Object.keys(theirs)) expect(ours[name], name).toBe(theirs[name])
    expect(Object.keys(ours).sort()).toEqual([...Object.keys(theirs), 'graceful'].sort())
  })
})

import { createShutdown, resolveAdapterOptions } from '@lameduck/core'
import { graceful as expressGraceful } from '@lameduck/express'
import { graceful as koaGraceful } from '@lameduck/koa'
import { describe, expect, it } from 'vitest'
import { createFastifyApp } from '../../fastify/test/app.ts'

// Every adapter validates its options through the core, once, when it is created: the same class,
// code and text as resolveAdapterOptions() for the same input, and nothing created on the way.
const existing = createShutdown({ signals: false, logger: false })
const BAD: ReadonlyArray<[what: string, options: unknown]> = [
  ['a typo', { timeout: 1_000 }],
  ['a negative duration', { timeoutMs: -1 }],
  ['NaN', { drainDelayMs: Number.NaN }],
  ['Infinity', { hookTimeoutMs: Number.POSITIVE_INFINITY }],
  ['a string duration', { idleGraceMs: '50ms' }],
  ['an unknown lateRequests', { lateRequests: 'drop' }],
  ['SIGKILL', { signals: ['SIGKILL'] }],
  ['a bad health', { health: 'yes' }],
  ['a health typo', { health: { ready: '/r' } }],
  ['core options beside a shutdown', { shutdown: existing, timeoutMs: 5 }],
  ['not a Shutdown', { shutdown: {} }],
  ['options that are not an object', 'fast'],
]

function thrown(fn: () => unknown): { kind: string; code: unknown; message: string } {
  try {
    fn()
  } catch (error) {
    return {
      kind: (error as Error).constructor.name,
      code: (error as { code?: unknown }).code,
      message: (error as Error).message,
    }
  }
  throw new Error('expected a throw; nothing was thrown')
}

async function rejected(
  promise: Promise<unknown>,
): Promise<{ kind: string; code: unknown; message: string }> {
  try {
    const app = (await promise) as { close(): Promise<void> }
    await app.close()
  } catch (error) {
    return {
      kind: (error as Error).constructor.name,
      code: (error as { code?: unknown }).code,
      message: (error as Error).message,
    }
  }
  throw new Error('expected a rejection; the app started')
}

describe('every adapter rejects bad options exactly as the core does, at creation', () => {
  for (const [what, options] of BAD) {
    it(what, async () => {
      const expected = thrown(() => resolveAdapterOptions(options as never))
      expect(expected.code).toBe('ERR_LAMEDUCK_INVALID_OPTION')
      expect(expected.kind === 'TypeError' || expected.kind === 'RangeError').toBe(true)
      const signalsBefore = process.listenerCount('SIGTERM')
      expect(
        thrown(() => expressGraceful(options as never)),
        'Express',
      ).toEqual(expected)
      expect(
        thrown(() => koaGraceful(options as never)),
        'Koa',
      ).toEqual(expected)
      const fastify = await rejected(createFastifyApp(options as never))
      if (typeof options === 'object') expect(fastify, 'Fastify').toEqual(expected)
      // Fastify's register() turns a non-object into an object ("fast" → { 0: "f", … }) before the
      // plugin sees it, so only the kind and code can match: the text names key "0".
      else expect(fastify, 'Fastify').toMatchObject({ kind: expected.kind, code: expected.code })
      // Nothing was created on the way: no signal listener left behind by a half-made Shutdown.
      expect(process.listenerCount('SIGTERM')).toBe(signalsBefore)
    })
  }
})

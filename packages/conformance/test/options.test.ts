import { createShutdown, resolveAdapterOptions } from '@lameduck/core'
import { graceful as expressGraceful } from '@lameduck/express'
import { graceful as koaGraceful } from '@lameduck/koa'
import { describe, expect, it } from 'vitest'
import { createFastifyApp } from '../../fastify/test/app.ts'

// Every adapter validates its options through the core, once, when it is created: the same class,
// code and text as resolveAdapterOptions() for the same input, the text naming the adapter the user
// called, and nothing created on the way.
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
  ['options that are a number', 5],
  ['options that are an array', ['SIGTERM']],
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

describe('every adapter rejects bad options exactly as the core does, at creation, under its own name', () => {
  for (const [what, options] of BAD) {
    it(what, async () => {
      const expected = (adapter: string) => thrown(() => resolveAdapterOptions(options as never, adapter))
      const core = thrown(() => resolveAdapterOptions(options as never))
      expect(core.code).toBe('ERR_LAMEDUCK_INVALID_OPTION')
      expect(core.kind === 'TypeError' || core.kind === 'RangeError').toBe(true)
      expect(core.message.startsWith('@lameduck/core: ')).toBe(true)
      const signalsBefore = process.listenerCount('SIGTERM')
      const express = thrown(() => expressGraceful(options as never))
      expect(express, 'Express').toEqual(expected('@lameduck/express'))
      expect(express.message, 'Express').toBe(core.message.replace('@lameduck/core: ', '@lameduck/express: '))
      const koa = thrown(() => koaGraceful(options as never))
      expect(koa, 'Koa').toEqual(expected('@lameduck/koa'))
      expect(koa.message, 'Koa').toBe(core.message.replace('@lameduck/core: ', '@lameduck/koa: '))
      // Options that are not an object too: the plugin passes them to the core as Fastify gave them.
      const fastify = await rejected(createFastifyApp(options as never))
      expect(fastify, 'Fastify').toEqual(expected('@lameduck/fastify'))
      expect(fastify.message, 'Fastify').toBe(core.message.replace('@lameduck/core: ', '@lameduck/fastify: '))
      // Nothing was created on the way: no signal listener left behind by a half-made Shutdown.
      expect(process.listenerCount('SIGTERM')).toBe(signalsBefore)
    })
  }
})

import { Writable } from 'node:stream'
import { request, within } from '@lameduck/test-utils'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterEach, describe, expect, it } from 'vitest'
import { createShutdown, graceful } from '../src/index.js'
import { startFastify, stopFastifyApps } from './helpers/fastify.js'

afterEach(stopFastifyApps)

/** Fastify's pino logger writing JSON lines into `lines`. */
function collectingLogger(lines: Array<Record<string, unknown>>) {
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString().split('\n').filter(Boolean))
        lines.push(JSON.parse(line) as Record<string, unknown>)
      callback()
    },
  })
  return { level: 'info', stream }
}

describe('options, checked when the plugin is registered', () => {
  it('rejects register() with the core’s TypeError for an unknown option, naming @lameduck/fastify', async () => {
    const app = Fastify()
    const error = await app.register(graceful, { timeout: 10_000 } as never).then(
      () => undefined,
      (caught: unknown) => caught,
    )
    expect(error).toBeInstanceOf(TypeError)
    expect(error).toMatchObject({
      code: 'ERR_LAMEDUCK_INVALID_OPTION',
      message: '@lameduck/fastify: unknown option "timeout"; did you mean "timeoutMs"?',
    })
    await app.close()
  })

  it('rejects a core option beside a shared shutdown, and a bad health option', async () => {
    const shutdown = createShutdown({ signals: false, logger: false })
    const first = Fastify()
    await expect(first.register(graceful, { shutdown, timeoutMs: 5 })).rejects.toMatchObject({
      code: 'ERR_LAMEDUCK_INVALID_OPTION',
      message: expect.stringContaining('option "timeoutMs" must be set on the given "shutdown"'),
    })
    const second = Fastify()
    await expect(
      second.register(graceful, { signals: false, health: { readyPath: 'readyz' } }),
    ).rejects.toBeInstanceOf(RangeError)
    await Promise.all([first.close(), second.close()])
    await shutdown.force()
  })

  it('rejects a second registration on the same app before creating a second shutdown', async () => {
    const { app, port } = await startFastify((app) => {
      app.get('/', async () => 'ok')
    })
    const first = app.shutdown
    const again = Fastify()
    await again.register(graceful, { signals: false, logger: false })
    const listenersBefore = process.listenerCount('SIGUSR2')
    await expect(again.register(graceful, { signals: ['SIGUSR2'], logger: false })).rejects.toMatchObject({
      code: 'FST_ERR_DEC_ALREADY_PRESENT',
    })
    // No second Shutdown was made: it would have installed a SIGUSR2 listener.
    expect(process.listenerCount('SIGUSR2')).toBe(listenersBefore)
    await again.close().catch(() => {})
    expect(app.shutdown).toBe(first)
    expect((await request(port, { path: '/', agent: false })).body).toBe('ok')
  })

  it('logs through app.log (pino) by default', async () => {
    const lines: Array<Record<string, unknown>> = []
    const app = Fastify({ logger: collectingLogger(lines) })
    await app.register(graceful, { signals: false })
    await within(3_000, app.shutdown.close('test'), 'the shutdown')
    const started = lines.find((line) => String(line.msg).startsWith('shutdown started (test)'))
    expect(started).toMatchObject({ level: 30, reason: 'test', drainDelayMs: 0 })
    expect(lines.some((line) => String(line.msg).startsWith('closed (test) gracefully'))).toBe(true)
  })

  it('uses the logger given instead, and nothing of app.log with logger: false', async () => {
    const fastifyLines: Array<Record<string, unknown>> = []
    const ours: string[] = []
    const logger = {
      info: (_fields: Record<string, unknown>, message: string) => ours.push(message),
      warn: (_fields: Record<string, unknown>, message: string) => ours.push(message),
      error: (_fields: Record<string, unknown>, message: string) => ours.push(message),
    }
    const { app } = await startFastify(() => {}, { logger }, { logger: collectingLogger(fastifyLines) })
    await app.shutdown.close('given')
    expect(ours.some((message) => message.startsWith('shutdown started (given)'))).toBe(true)
    const { app: silent } = await startFastify(
      () => {},
      { logger: false },
      { logger: collectingLogger(fastifyLines) },
    )
    await silent.shutdown.close('silent')
    expect(fastifyLines.filter((line) => String(line.msg).includes('shutdown started'))).toEqual([])
  })

  it('shares one shutdown between two apps: each is drained and closed once, by either app.close()', async () => {
    const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 3_000 })
    const closedApps: string[] = []
    const make = async (name: string): Promise<{ app: FastifyInstance; port: number }> =>
      startFastify(
        (app) => {
          app.get('/', async () => name)
          app.addHook('onClose', async () => {
            closedApps.push(name)
          })
        },
        { shutdown },
      )
    const one = await make('one')
    const two = await make('two')
    expect(one.app.shutdown).toBe(shutdown)
    expect(two.app.shutdown).toBe(shutdown)
    expect((await request(two.port, { path: '/', agent: false })).body).toBe('two')
    await within(3_000, one.app.close(), 'the first app to close')
    const report = await within(3_000, shutdown.close(), 'the shared report')
    expect(report.hooks.map((hook) => hook.label)).toEqual(['fastify.close()', 'fastify.close()'])
    expect([...closedApps].sort()).toEqual(['one', 'two'])
    await two.app.close()
    expect(closedApps).toHaveLength(2)
  })
})

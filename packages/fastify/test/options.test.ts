import { Writable } from 'node:stream'
import { request, within } from '@lameduck/test-utils'
import Fastify, { type FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { afterEach, describe, expect, it } from 'vitest'
import { createShutdown, type GracefulOptions, graceful } from '../src/index.js'
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

/** What `register()` rejected with: class, code and message, or a failure if it registered. */
async function registerError(options: unknown): Promise<{ kind: string; code: unknown; message: string }> {
  const app = Fastify()
  try {
    await app.register(graceful, options as never)
  } catch (error) {
    await app.close()
    return {
      kind: (error as Error).constructor.name,
      code: (error as { code?: unknown }).code,
      message: (error as Error).message,
    }
  }
  await app.shutdown.close('cleanup')
  await app.close()
  throw new Error(`expected register() to reject ${String(options)}; it registered`)
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

  it("accepts Fastify's own register options (prefix, logLevel, logSerializers) and ignores them, as fastify-plugin does", async () => {
    const { port } = await startFastify(() => {}, {
      health: true,
      prefix: '/ops',
      logLevel: 'warn',
      logSerializers: {},
    } as GracefulOptions)
    // The plugin reaches the whole app: the probes stay where health puts them.
    expect((await request(port, { path: '/readyz' })).status).toBe(200)
    expect((await request(port, { path: '/ops/readyz' })).status).toBe(404)
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

  it('warns when registered inside an encapsulated plugin, where its probes reach only that plugin', async () => {
    const lines: Array<Record<string, unknown>> = []
    const warned = () =>
      lines.some(
        (line) =>
          line.level === 40 && String(line.msg).startsWith('registered inside an encapsulated plugin'),
      )
    const encapsulated = Fastify({ logger: collectingLogger(lines) })
    await encapsulated.register(async (child) => {
      await child.register(graceful, { signals: false, health: true })
      child.get('/inside', async () => 'inside')
    })
    await encapsulated.ready()
    expect(warned()).toBe(true)
    expect((await encapsulated.inject({ url: '/readyz' })).statusCode).toBe(404)
    await encapsulated.close()

    lines.length = 0
    const shared = Fastify({ logger: collectingLogger(lines) })
    await shared.register(
      fp(async (inner) => {
        await inner.register(graceful, { signals: false, health: true })
      }),
    )
    await shared.ready()
    expect(warned()).toBe(false)
    expect((await shared.inject({ url: '/readyz' })).statusCode).toBe(200)
    await shared.shutdown.close('test')
    await shared.close()
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

describe('options that are not an object', () => {
  const NOT_AN_OBJECT = '@lameduck/fastify: option "options" must be an object; received'
  // Fastify hands these to the plugin as they are; spreading them used to report `unknown option
  // "0"` for a string or an array and accept a number or a boolean as empty options.
  for (const [options, described] of [
    ['str', '"str" (string)'],
    [5, '5 (number)'],
    [true, 'true (boolean)'],
    [['timeoutMs'], 'an array'],
    [Symbol('opts'), 'Symbol(opts) (symbol)'],
    [10n, '10 (bigint)'],
  ] as const) {
    it(`rejects ${described} by what it is, before any Shutdown exists`, async () => {
      const signalsBefore = process.listenerCount('SIGTERM')
      expect(await registerError(options)).toEqual({
        kind: 'TypeError',
        code: 'ERR_LAMEDUCK_INVALID_OPTION',
        message: `${NOT_AN_OBJECT} ${described}.`,
      })
      expect(process.listenerCount('SIGTERM')).toBe(signalsBefore)
    })
  }

  // avvio (Fastify's plugin loader) runs `opts = opts || {}` in register(): a falsy value never
  // reaches the plugin, which sees `{}` and registers with the defaults. Documented on `graceful`.
  for (const options of ['', 0, Number.NaN, false, null]) {
    it(`cannot tell ${typeof options === 'string' ? JSON.stringify(options) : String(options)} given to register() from no options: the defaults apply`, async () => {
      let received: unknown = 'not called'
      const app = Fastify()
      await app.register(async (_app, opts) => {
        received = opts
      }, options as never)
      await app.register(graceful, options as never)
      expect(received).toEqual({})
      expect(app.shutdown.state).toBe('serving')
      expect(app.shutdown.refusal().headers['retry-after']).toBe('5')
      await within(3_000, app.close(), 'app.close()')
      expect(app.shutdown.state).toBe('closed')
    })
  }

  it('takes the options-as-function form, called with the parent instance; logger still defaults to app.log', async () => {
    const lines: Array<Record<string, unknown>> = []
    const app = Fastify({ logger: collectingLogger(lines) })
    let parent: unknown
    await app.register(graceful, (instance): GracefulOptions => {
      parent = instance
      return { signals: false, health: true, retryAfterSeconds: 9 }
    })
    expect(parent).toBe(app)
    await app.listen({ port: 0, host: '127.0.0.1' })
    const port = (app.server.address() as import('node:net').AddressInfo).port
    expect(await request(port, { path: '/readyz', agent: false })).toMatchObject({
      status: 200,
      body: '{"status":"serving"}',
    })
    expect(app.shutdown.refusal().headers['retry-after']).toBe('9')
    await within(3_000, app.close(), 'app.close()')
    expect(lines.some((line) => String(line.msg).startsWith('shutdown started (app.close())'))).toBe(true)
  })

  it('takes a shared shutdown from the function form', async () => {
    const shutdown = createShutdown({ signals: false, logger: false })
    const app = Fastify()
    await app.register(graceful, () => ({ shutdown }))
    expect(app.shutdown).toBe(shutdown)
    await within(3_000, app.close(), 'app.close()')
    expect(shutdown.state).toBe('closed')
  })

  it('checks what the function returns, falsy values included (they reach the plugin as they are)', async () => {
    expect(await registerError(() => ({ timeout: 1 }))).toEqual({
      kind: 'TypeError',
      code: 'ERR_LAMEDUCK_INVALID_OPTION',
      message: '@lameduck/fastify: unknown option "timeout"; did you mean "timeoutMs"?',
    })
    expect((await registerError(() => 'str')).message).toBe(`${NOT_AN_OBJECT} "str" (string).`)
    expect((await registerError(() => null)).message).toBe(`${NOT_AN_OBJECT} null.`)
    expect((await registerError(() => 0)).message).toBe(`${NOT_AN_OBJECT} 0 (number).`)
  })
})

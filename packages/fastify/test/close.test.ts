import { PassThrough } from 'node:stream'
import {
  connectOutcome,
  deferred,
  expectRefusalBytes,
  parseResponses,
  rawConnect,
  rawRequest,
  reached,
  request,
  within,
} from '@lameduck/test-utils'
import type { FastifyInstance } from 'fastify'
import { afterEach, describe, expect, it } from 'vitest'
import type { GracefulOptions } from '../src/index.js'
import { startFastify, stopFastifyApps } from './helpers/fastify.js'

afterEach(stopFastifyApps)

/** An app whose hooks record themselves in `order`, with a parkable `/slow` and a `/fast`. */
async function startRecorded(options: GracefulOptions = {}) {
  const order: string[] = []
  const gates: Array<ReturnType<typeof deferred<void>>> = []
  const parkedNow = deferred<void>()
  const { app, port } = await startFastify(
    (app: FastifyInstance) => {
      app.addHook('preClose', async () => {
        order.push(`fastify preClose (core ${app.shutdown.state})`)
      })
      app.addHook('onClose', async () => {
        order.push(`fastify onClose (core ${app.shutdown.state})`)
      })
      app.shutdown.onClose('db', () => {
        order.push(`core onClose (core ${app.shutdown.state})`)
      })
      app.get('/fast', async () => 'fast')
      app.get('/slow', async () => {
        const gate = deferred<void>()
        gates.push(gate)
        parkedNow.resolve()
        await gate.promise
        order.push('slow handler done')
        return 'slow'
      })
    },
    { timeoutMs: 5_000, ...options },
  )
  return { app, port, order, gates, parked: parkedNow.promise }
}

const hookLabels = (report: { hooks: readonly { label: string }[] }) => report.hooks.map((hook) => hook.label)

describe('one close sequence, whichever way it starts', () => {
  it('app.close() drains the in-flight request first, without the drain delay, then runs each hook once', async () => {
    const { app, port, order, gates, parked } = await startRecorded({ drainDelayMs: 3_000 })
    const slow = request(port, { path: '/slow' })
    await within(2_000, parked, 'the slow request to park')
    const startedAt = Date.now()
    const closed = app.close()
    // Fastify set its closing flag before preClose: no reason to keep the listener open for a delay.
    await reached(app.shutdown, 'stopping')
    expect(await connectOutcome(port)).toBe('ECONNREFUSED')
    expect(order).toEqual([])
    gates[0]?.resolve()
    const response = await within(2_000, slow, 'the slow response')
    expect(response).toMatchObject({ status: 200, body: 'slow' })
    expect(response.headers.connection).toBe('close')
    await within(3_000, closed, 'app.close() to resolve')
    const report = await within(1_000, app.shutdown.close(), 'the report')
    expect(Date.now() - startedAt).toBeLessThan(3_000)
    expect(report).toMatchObject({
      reason: 'app.close()',
      graceful: true,
      requests: { completed: 1, refused: 0, forced: 0 },
    })
    expect(hookLabels(report)).toEqual(['db', 'fastify.close()'])
    expect(order).toEqual([
      'slow handler done',
      'core onClose (core closing)',
      'fastify preClose (core closing)',
      'fastify onClose (core closing)',
    ])
    // Closing again, either way, runs nothing twice.
    await app.close()
    await app.shutdown.close('again')
    expect(order).toHaveLength(4)
  })

  it('a core close (what a signal runs) drains, then runs the core hooks and Fastify’s close inside one bounded entry', async () => {
    const { app, port, order, gates, parked } = await startRecorded({ drainDelayMs: 100 })
    const slow = request(port, { path: '/slow' })
    await within(2_000, parked, 'the slow request to park')
    const report = app.shutdown.close('SIGTERM')
    expect(app.shutdown.state).toBe('draining')
    await reached(app.shutdown, 'stopping')
    expect(order).toEqual([])
    gates[0]?.resolve()
    expect((await within(2_000, slow, 'the slow response')).headers.connection).toBe('close')
    const done = await within(3_000, report, 'the report')
    expect(done).toMatchObject({ reason: 'SIGTERM', graceful: true, requests: { completed: 1 } })
    expect(hookLabels(done)).toEqual(['db', 'fastify.close()'])
    expect(done.hooks.every((hook) => hook.ok)).toBe(true)
    expect(order).toEqual([
      'slow handler done',
      'core onClose (core closing)',
      'fastify preClose (core closing)',
      'fastify onClose (core closing)',
    ])
    await app.close()
    expect(order).toHaveLength(4)
  })

  it('app.close() during a core close already under way joins it: no deadlock, each hook once', async () => {
    const { app, port, order, gates, parked } = await startRecorded({ drainDelayMs: 200 })
    const slow = request(port, { path: '/slow' })
    await within(2_000, parked, 'the slow request to park')
    const report = app.shutdown.close('SIGTERM')
    const closed = app.close()
    gates[0]?.resolve()
    await within(2_000, slow, 'the slow response')
    await within(3_000, Promise.all([report, closed]), 'both closes to finish')
    expect((await report).reason).toBe('SIGTERM')
    expect(hookLabels(await report)).toEqual(['db', 'fastify.close()'])
    expect(order.filter((entry) => entry.startsWith('fastify onClose'))).toHaveLength(1)
    expect(order.filter((entry) => entry.startsWith('core onClose'))).toHaveLength(1)
  })

  it('a forced drain still runs Fastify’s close once, and app.close() resolves', async () => {
    const { app, port, order, gates, parked } = await startRecorded({ timeoutMs: 200 })
    const slow = request(port, { path: '/slow' }).catch((error: NodeJS.ErrnoException) => error.code)
    await within(2_000, parked, 'the slow request to park')
    await within(3_000, app.close(), 'app.close() past the deadline')
    const report = await app.shutdown.close()
    expect(report).toMatchObject({ graceful: false, requests: { forced: 1 }, exitCode: 1 })
    expect(await slow).toBe('ECONNRESET')
    expect(order).toEqual([
      'core onClose (core closing)',
      'fastify preClose (core closing)',
      'fastify onClose (core closing)',
    ])
    gates[0]?.resolve()
  })

  it('bounds Fastify’s close by the hook timeout: a hanging Fastify onClose hook is reported, not waited for', async () => {
    const hang = deferred<void>()
    const { app } = await startFastify(
      (app) => {
        app.addHook('onClose', () => hang.promise)
      },
      { hookTimeoutMs: 150 },
    )
    const report = await within(3_000, app.shutdown.close('SIGTERM'), 'the report despite the hanging hook')
    const entry = report.hooks.find((hook) => hook.label === 'fastify.close()')
    expect(entry).toMatchObject({ ok: false, timedOut: true })
    expect(report.exitCode).toBe(1)
    hang.resolve()
  })

  it('closes keep-alive connections that are idle at once, not after Fastify’s 72 s keepAliveTimeout', async () => {
    const { app, port } = await startFastify((app) => {
      app.get('/fast', async () => 'fast')
    })
    expect(app.server.keepAliveTimeout).toBe(72_000)
    const viaCore = await rawConnect(port)
    viaCore.write(rawRequest('GET', '/fast'))
    await viaCore.waitFor('fast')
    const startedAt = Date.now()
    await within(2_000, app.close(), 'app.close()')
    const { data, error } = await within(2_000, viaCore.closed, 'the idle socket to be closed')
    expect(error).toBeUndefined()
    expect(parseResponses(data).map((r) => r.headers.connection)).toEqual(['keep-alive'])
    expect(Date.now() - startedAt).toBeLessThan(2_000)
  })

  it('closes a connection that goes idle during the drain as soon as its response ends', async () => {
    const body = new PassThrough()
    const { app, port } = await startFastify((app) => {
      app.get('/stream', (_request, reply) => {
        reply.type('text/plain').send(body)
        body.write('started\n')
      })
    })
    const raw = await rawConnect(port)
    raw.write(rawRequest('GET', '/stream'))
    // Headers already sent with keep-alive: this response cannot carry Connection: close any more.
    await raw.waitFor('started')
    expect(raw.received()).toMatch(/connection: keep-alive/i)
    const closed = app.close()
    await reached(app.shutdown, 'stopping')
    body.end('ended\n')
    const { error } = await within(2_000, raw.closed, 'the now idle socket to be closed')
    expect(error).toBeUndefined()
    expect(raw.received()).toContain('ended')
    await within(2_000, closed, 'app.close()')
    expect((await app.shutdown.close()).graceful).toBe(true)
  })

  it('answers a request arriving during the app.close() drain with Fastify’s own 503: same body, no Retry-After', async () => {
    const { app, port, gates, parked } = await startRecorded({ idleGraceMs: 2_000 })
    const raw = await rawConnect(port)
    raw.write(rawRequest('GET', '/fast'))
    await raw.waitFor('fast')
    const slow = request(port, { path: '/slow' })
    await within(2_000, parked, 'the slow request to park')
    const closed = app.close()
    await reached(app.shutdown, 'stopping')
    raw.write(rawRequest('GET', '/fast'))
    const { data } = await within(3_000, raw.closed, 'the connection to close after the 503')
    const [, answer] = parseResponses(data)
    const ours = app.shutdown.refusal({ httpVersionMajor: 1 })
    expect(answer?.status).toBe(503)
    expect(answer?.body).toBe(ours.body)
    expect(answer?.headers.connection).toBe('close')
    expect(answer?.headers['retry-after']).toBeUndefined()
    expect(ours.headers['retry-after']).toBe('5')
    gates[0]?.resolve()
    await within(2_000, slow, 'the slow response')
    await within(3_000, closed, 'app.close()')
  })

  it('with Fastify’s return503OnClosing: false, a request during the app.close() drain follows lateRequests instead', async () => {
    const gate = deferred<void>()
    const parked = deferred<void>()
    const { app, port } = await startFastify(
      (app) => {
        app.get('/fast', async () => 'fast')
        app.get('/slow', async () => {
          parked.resolve()
          await gate.promise
          return 'slow'
        })
      },
      { idleGraceMs: 2_000, lateRequests: 'refuse', timeoutMs: 5_000 },
      { return503OnClosing: false },
    )
    const raw = await rawConnect(port)
    raw.write(rawRequest('GET', '/fast'))
    await raw.waitFor('fast')
    const slow = request(port, { path: '/slow' })
    await within(2_000, parked.promise, 'the slow request to park')
    const closed = app.close()
    await reached(app.shutdown, 'stopping')
    raw.write(rawRequest('GET', '/fast'))
    const { data } = await within(3_000, raw.closed, 'the connection to close after the refusal')
    expectRefusalBytes(data.slice(data.indexOf('HTTP/1.1 503')), 5)
    gate.resolve()
    await within(2_000, slow, 'the slow response')
    await within(3_000, closed, 'app.close()')
  })
})

import {
  keepAliveAgent,
  parseResponses,
  rawConnect,
  rawRequest,
  request,
  until,
  within,
} from '@lameduck/test-utils'
import supertest from 'supertest'
import { afterEach, describe, expect, it } from 'vitest'
import type { GracefulOptions } from '../src/index.ts'
import { type ExpressTestApp, startExpressApp } from './helpers/app.ts'
import { type ExpressFactory, expressVersions } from './helpers/express.ts'

let running: ExpressTestApp | undefined
afterEach(async () => {
  await running?.close()
  running = undefined
})

async function start(express: ExpressFactory, options: GracefulOptions): Promise<ExpressTestApp> {
  running = await startExpressApp(
    express,
    { signals: false, logger: false, timeoutMs: 5_000, ...options },
    (app, { route, park }) => {
      app.get(
        '/slow',
        route(async (_req, res) => {
          await park()
          res.send('slow')
        }),
      )
      app.get(
        '/first',
        route((_req, res) => res.send('first')),
      )
    },
  )
  return running
}

describe.each(expressVersions)('health probes with $name', ({ express }) => {
  it('answers readiness 200 while serving, 503 from the signal on, and liveness 200 throughout, uncounted', async () => {
    const app = await start(express, { health: true, drainDelayMs: 3_000 })
    const agent = keepAliveAgent()
    const ready = await request(app.port, { agent, path: '/readyz' })
    expect([ready.status, ready.body, ready.headers['content-type'], ready.headers['cache-control']]).toEqual(
      [200, '{"status":"serving"}', 'application/json', 'no-store'],
    )
    const head = await request(app.port, { agent, method: 'HEAD', path: '/readyz?verbose=1' })
    expect([head.status, head.body, head.headers['content-length']]).toEqual([200, '', '20'])
    expect((await request(app.port, { agent, path: '/livez' })).status).toBe(200)

    const report = app.shutdown.close('test')
    expect(app.shutdown.state).toBe('draining')
    const notReady = await request(app.port, { agent, path: '/readyz' })
    expect([notReady.status, notReady.body, notReady.reused]).toEqual([503, '{"status":"draining"}', true])
    const alive = await request(app.port, { agent, path: '/livez' })
    expect([alive.status, alive.body]).toEqual([200, '{"status":"alive"}'])

    // Answered by the middleware: nothing after it ran, and none was counted as a request.
    expect(app.records).toEqual([])
    agent.destroy()
    const done = await within(3_000, app.shutdown.force('test'), 'the report')
    await report
    expect(done.requests).toEqual({ completed: 0, refused: 0, forced: 0 })
  })

  it("bypasses the gate: a probe on an open connection while stopping gets readiness 503, not the refusal, under 'refuse'", async () => {
    const app = await start(express, { health: true, lateRequests: 'refuse', idleGraceMs: 1_000 })
    const raw = await rawConnect(app.port)
    raw.write(rawRequest('GET', '/first'))
    await raw.waitFor(/\r\n\r\nfirst$/)
    const busy = request(app.port, { path: '/slow' })
    const gate = await within(2_000, app.nextParked(), 'the slow request')
    const report = app.shutdown.close('test')
    await until(() => app.shutdown.state === 'stopping', 2_000, 'stopping')
    raw.write(rawRequest('GET', '/readyz'))
    const { data, error } = await within(3_000, raw.closed, 'the probe connection to close')
    expect(error).toBeUndefined()
    // The probe is this connection's last request: answered by the probe, with Connection: close.
    expect(parseResponses(data).map((r) => [r.status, r.body, r.headers.connection])).toEqual([
      [200, 'first', 'keep-alive'],
      [503, '{"status":"stopping"}', 'close'],
    ])
    expect(app.records).toEqual(['mw /first', '/first', 'mw /slow', '/slow'])
    gate.resolve()
    await within(2_000, busy, 'the slow response')
    expect((await within(3_000, report, 'the report')).requests.refused).toBe(0)
  })

  it('serves custom probe paths, HEAD too, and leaves the defaults and other methods to the app', async () => {
    const app = await start(express, { health: { readyPath: '/health/ready', livePath: '/health/live' } })
    await supertest(app.server)
      .get('/health/ready?probe=kubelet')
      .expect(200)
      .expect('content-type', 'application/json')
      .expect('{"status":"serving"}')
    await supertest(app.server).head('/health/live').expect(200).expect('content-length', '18')
    await supertest(app.server).get('/health/live').expect(200, '{"status":"alive"}')
    await supertest(app.server).get('/readyz').expect(404)
    await supertest(app.server).post('/health/ready').expect(404)
    expect(app.records).toEqual(['mw /readyz', 'mw /health/ready'])
  })

  it('serves no probes unless asked', async () => {
    const app = await start(express, {})
    await supertest(app.server).get('/readyz').expect(404)
    await supertest(app.server).get('/livez').expect(404)
    expect(app.records).toEqual(['mw /readyz', 'mw /livez'])
  })
})

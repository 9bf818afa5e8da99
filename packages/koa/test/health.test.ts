import { request, within } from '@lameduck/test-utils'
import supertest from 'supertest'
import { afterEach, describe, expect, it } from 'vitest'
import { createAppWith, type KoaTestApp, koaVersions } from './app.js'

let app: KoaTestApp | undefined
afterEach(async () => {
  if (app) {
    await app.shutdown.force('afterEach')
    await app.close()
  }
  app = undefined
})

describe.each(koaVersions)('%s: health probes', (_name, Koa) => {
  const create = createAppWith(Koa)

  it('health: true answers /readyz and /livez before the gate, uncounted; readiness turns 503 once draining', async () => {
    app = await create({ signals: false, logger: false, health: true, drainDelayMs: 2_000, timeoutMs: 5_000 })
    const { port } = app
    const ready = await request(port, { agent: false, path: '/readyz' })
    expect([ready.status, JSON.parse(ready.body)]).toEqual([200, { status: 'serving' }])
    expect(ready.headers).toMatchObject({
      'content-type': 'application/json',
      'cache-control': 'no-store',
      'content-length': String(ready.body.length),
    })
    const live = await request(port, { agent: false, path: '/livez' })
    expect([live.status, JSON.parse(live.body)]).toEqual([200, { status: 'alive' }])
    const head = await request(port, { agent: false, method: 'HEAD', path: '/readyz?verbose=1' })
    expect([head.status, head.body, head.headers['content-length']]).toEqual([
      200,
      '',
      ready.headers['content-length'],
    ])

    const report = app.shutdown.close('test')
    expect(app.shutdown.state).toBe('draining')
    const notReady = await request(port, { agent: false, path: '/readyz' })
    expect([notReady.status, JSON.parse(notReady.body)]).toEqual([503, { status: 'draining' }])
    expect((await request(port, { agent: false, path: '/livez' })).status).toBe(200)
    // Traffic is still served while draining; only readiness changed.
    expect((await request(port, { agent: false, path: '/fast' })).status).toBe(200)

    expect(app.reached).toEqual(['/fast'])
    const done = await within(2_000, app.shutdown.force('test'), 'the forced end of the drain delay')
    expect(done).toBe(await report)
    expect(done.requests).toEqual({ completed: 1, refused: 0, forced: 0 })
  })

  it('custom paths are probes; other methods and paths go downstream', async () => {
    app = await create({ signals: false, logger: false, health: { readyPath: '/ready', livePath: '/alive' } })
    await supertest(app.server).get('/ready').expect(200, { status: 'serving' })
    await supertest(app.server).get('/alive').expect(200, { status: 'alive' })
    await supertest(app.server).post('/ready').expect(404)
    await supertest(app.server).get('/readyz').expect(404)
    expect(app.reached).toEqual(['/ready', '/readyz'])
  })

  it('without health, probe paths are ordinary requests', async () => {
    app = await create({ signals: false, logger: false })
    await supertest(app.server).get('/readyz').expect(404)
    await supertest(app.server).head('/livez').expect(404)
    expect(app.reached).toEqual(['/readyz', '/livez'])
  })
})

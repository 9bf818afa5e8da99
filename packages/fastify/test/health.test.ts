import http from 'node:http'
import { keepAliveAgent, request, until, within } from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { createFastifyApp, type FastifyAdapterApp } from './app.js'

let current: FastifyAdapterApp | undefined
afterEach(async () => {
  await current?.close()
  current = undefined
})

async function start(options: Parameters<typeof createFastifyApp>[0]) {
  current = await createFastifyApp(options)
  return current
}

function head(
  port: number,
  path: string,
): Promise<{ status: number; length: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .request({ host: '127.0.0.1', port, method: 'HEAD', path }, (res) => {
        let body = ''
        res.on('data', (chunk: Buffer) => {
          body += chunk.toString()
        })
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, length: res.headers['content-length'], body }),
        )
      })
      .on('error', reject)
      .end()
  })
}

describe('health probes', () => {
  it('answers readiness and liveness raw, uncounted, bypassing the gate; readiness turns 503 from the signal on', async () => {
    const app = await start({
      signals: false,
      logger: false,
      health: true,
      drainDelayMs: 2_000,
      timeoutMs: 5_000,
    })
    const agent = keepAliveAgent()
    const ready = await request(app.port, { agent, path: '/readyz' })
    expect(ready).toMatchObject({ status: 200, body: '{"status":"serving"}' })
    expect(ready.headers).toMatchObject({ 'content-type': 'application/json', 'cache-control': 'no-store' })
    expect(await request(app.port, { agent, path: '/livez' })).toMatchObject({
      status: 200,
      body: '{"status":"alive"}',
    })
    expect(await head(app.port, '/readyz')).toEqual({ status: 200, length: '20', body: '' })
    expect((await request(app.port, { agent, path: '/readyz?verbose=1' })).status).toBe(200)

    const slow = request(app.port, { path: '/slow' })
    const gate = await within(2_000, app.nextParked(), 'the slow request to park')
    expect(app.shutdown.inFlight).toBe(1)
    const report = app.shutdown.close('test')
    const draining = await request(app.port, { agent, path: '/readyz' })
    expect(draining).toMatchObject({ status: 503, body: '{"status":"draining"}' })
    expect(draining.reused).toBe(true)
    expect(await request(app.port, { agent, path: '/livez' })).toMatchObject({
      status: 200,
      body: '{"status":"alive"}',
    })
    // Probes were never counted: only the parked request is.
    expect(app.shutdown.inFlight).toBe(1)
    expect(app.hits).toEqual(['/slow'])
    agent.destroy()
    gate.resolve()
    await within(2_000, slow, 'the slow response')
    await app.shutdown.force('end of test')
    expect((await report).requests.completed).toBe(1)
  })

  it('serves custom paths, and nothing when health is off', async () => {
    const app = await start({
      signals: false,
      logger: false,
      health: { readyPath: '/ready', livePath: '/alive' },
    })
    expect((await request(app.port, { path: '/ready' })).status).toBe(200)
    expect((await request(app.port, { path: '/alive' })).status).toBe(200)
    expect((await request(app.port, { path: '/readyz' })).status).toBe(404)
    await app.close()
    const off = await start({ signals: false, logger: false })
    expect((await request(off.port, { path: '/readyz' })).status).toBe(404)
    expect((await request(off.port, { path: '/livez' })).status).toBe(404)
    await until(() => off.shutdown.inFlight === 0, 2_000, 'the 404s to be released')
  })
})

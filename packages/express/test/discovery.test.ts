import { keepAliveAgent, rawConnect, rawRequest, request, until, within } from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import type { Logger } from '../src/index.ts'
import { type ExpressTestApp, startExpressApp } from './helpers/app.ts'
import { expressVersions } from './helpers/express.ts'
import { tryConnect } from './helpers/net.ts'

let running: ExpressTestApp | undefined
afterEach(async () => {
  await running?.close()
  running = undefined
})

describe.each(expressVersions)('app.use(graceful()) without attach, with $name', ({ express }) => {
  it('discovers the server from the first request and drains it like an attached one', async () => {
    const lines: string[] = []
    const logger: Logger = {
      info: (_fields, message) => lines.push(message),
      warn: (_fields, message) => lines.push(message),
      error: (_fields, message) => lines.push(message),
    }
    const app = await startExpressApp(
      express,
      { signals: false, logger, timeoutMs: 5_000, idleGraceMs: 30 },
      (app, { route, park }) => {
        app.get(
          '/fast',
          route((_req, res) => res.send('fast')),
        )
        app.get(
          '/slow',
          route(async (_req, res) => {
            await park()
            res.send('slow')
          }),
        )
      },
      { attach: false },
    )
    running = app
    const agent = keepAliveAgent()
    expect((await request(app.port, { agent, path: '/fast' })).status).toBe(200)
    expect((await request(app.port, { agent, path: '/fast' })).reused).toBe(true)
    const attachLines = lines.filter((line) => line.includes('call shutdown.attach(server)'))
    expect(attachLines).toHaveLength(1)

    const idle = await rawConnect(app.port)
    idle.write(rawRequest('GET', '/fast'))
    await idle.waitFor(/\r\n\r\nfast$/)
    const slow = request(app.port, { agent, path: '/slow' })
    const gate = await within(2_000, app.nextParked(), 'the slow request to park')

    const report = app.shutdown.close('test')
    await until(() => app.shutdown.state === 'stopping', 2_000, 'stopping')
    expect(await tryConnect(app.port)).toBe('ECONNREFUSED')
    gate.resolve()
    const response = await within(2_000, slow, 'the slow response')
    expect([response.status, response.body, response.headers.connection]).toEqual([200, 'slow', 'close'])
    // The idle keep-alive socket is closed with a FIN once the server is quiet, not left to its timeout.
    const closed = await within(2_000, idle.closed, 'the idle socket to close')
    expect(closed.error).toBeUndefined()
    const done = await within(3_000, report, 'the drain to finish')
    expect(done.graceful).toBe(true)
    expect(done.connectionsDestroyed).toBe(0)
    expect(lines.filter((line) => line.includes('call shutdown.attach(server)'))).toHaveLength(1)
    agent.destroy()
  })

  it('discovers the server when the first requests are all health probes', async () => {
    const app = await startExpressApp(
      express,
      { signals: false, logger: false, timeoutMs: 5_000, health: true },
      () => {},
      { attach: false },
    )
    running = app
    expect((await request(app.port, { path: '/readyz' })).status).toBe(200)
    await within(3_000, app.shutdown.close('test'), 'the drain to finish')
    expect(await tryConnect(app.port)).toBe('ECONNREFUSED')
  })
})

import type { AddressInfo } from 'node:net'
import { createShutdown, type Shutdown } from '@lameduck/core'
import {
  closeServer,
  nextEvent,
  rawConnect,
  rawRequest,
  until,
  websocketHandshake,
  within,
} from '@lameduck/test-utils'
import Koa from 'koa'
import { afterEach, describe, expect, it } from 'vitest'
import { WebSocket } from 'ws'
import { graceful } from '../src/index.js'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/** koa-easy-ws's middleware: `ctx.ws()` upgrades the request it sees (Node emits it as a 'request'). */
type EasyWs = () => Koa.Middleware & { server: { clients: Set<WebSocket> } }

/** graceful() first, then koa-easy-ws; `/ws` upgrades and greets, anything else answers `ok`. */
async function start(): Promise<{ shutdown: Shutdown; port: number }> {
  const { default: websocket } = (await import('koa-easy-ws')) as unknown as { default: EasyWs }
  const shutdown = createShutdown({ signals: false, logger: false, timeoutMs: 5_000, idleGraceMs: 2_000 })
  const app = new Koa()
  app.use(graceful({ shutdown }))
  const ws = websocket()
  app.use(ws)
  app.use(async (ctx) => {
    const upgrade = (ctx as unknown as { ws?: () => Promise<WebSocket> }).ws
    if (upgrade === undefined) {
      ctx.body = 'ok'
      return
    }
    const socket = await upgrade()
    socket.send('hello')
  })
  // As the core README says: the app closes its WebSockets in a close hook.
  shutdown.onClose('websockets', () => {
    for (const client of ws.server.clients) client.close(1001, 'server shutting down')
  })
  const server = app.listen(0, '127.0.0.1')
  shutdown.attach(server)
  await nextEvent(server, 'listening')
  cleanups.push(async () => {
    await shutdown.force('cleanup')
    await closeServer(server)
  })
  return { shutdown, port: (server.address() as AddressInfo).port }
}

describe('koa-easy-ws (upgrades from a middleware)', () => {
  it('an open WebSocket is not counted and does not hold the drain; the close hook ends it (1001)', async () => {
    const { shutdown, port } = await start()
    const client = new WebSocket(`ws://127.0.0.1:${port}/ws`)
    client.on('error', () => {})
    const closed = new Promise<number>((resolve) => client.once('close', (code) => resolve(code)))
    const greeting = nextEvent(client, 'message')
    expect(String((await within(2_000, greeting, 'the greeting'))[0])).toBe('hello')
    expect(shutdown.inFlight).toBe(0)
    const startedAt = Date.now()
    const report = await within(3_000, shutdown.close('test'), 'the shutdown')
    expect(report.graceful).toBe(true)
    expect(Date.now() - startedAt).toBeLessThan(2_000)
    expect(await within(2_000, closed, 'the WebSocket to close')).toBe(1001)
  })

  it('refuses a WebSocket handshake on a kept-alive connection once stopping', async () => {
    const { shutdown, port } = await start()
    const raw = await rawConnect(port)
    raw.write(rawRequest('GET', '/first'))
    await raw.waitFor('\r\n\r\nok')
    let release!: () => void
    void shutdown.track('held', new Promise<void>((resolve) => (release = resolve)))
    const report = shutdown.close('test')
    await until(() => shutdown.state === 'stopping', 2_000, 'stopping')
    raw.write(websocketHandshake('/ws'))
    const { data } = await within(2_000, raw.closed, 'the refused connection to close')
    expect(data).not.toContain('101 Switching Protocols')
    expect(data.slice(data.lastIndexOf('HTTP/1.1 '))).toMatch(/^HTTP\/1\.1 503 /)
    release()
    expect((await within(3_000, report, 'the shutdown')).requests.refused).toBe(1)
  })
})

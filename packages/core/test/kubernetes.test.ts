import http from 'node:http'
import { closeServer, listen } from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { createShutdown, type Logger } from '../src/index.js'

const servers: http.Server[] = []
const before = process.env.KUBERNETES_SERVICE_HOST
afterEach(async () => {
  if (before === undefined) delete process.env.KUBERNETES_SERVICE_HOST
  else process.env.KUBERNETES_SERVICE_HOST = before
  for (const server of servers.splice(0)) await closeServer(server)
})

function capture() {
  const warnings: string[] = []
  const logger: Logger = { info() {}, warn: (_fields, message) => warnings.push(message), error() {} }
  const drainDelayWarnings = () => warnings.filter((message) => message.includes('drainDelayMs 0'))
  return { logger, drainDelayWarnings }
}

function server(): http.Server {
  const created = http.createServer((_req, res) => res.end('ok'))
  servers.push(created)
  return created
}

describe('in Kubernetes (KUBERNETES_SERVICE_HOST set) with drainDelayMs 0', () => {
  it('warns once a server attached to it listens, not when the Shutdown is made (apps tested with inject())', async () => {
    process.env.KUBERNETES_SERVICE_HOST = '10.0.0.1'
    const { logger, drainDelayWarnings } = capture()
    const shutdown = createShutdown({ signals: false, logger })
    const first = server()
    shutdown.attach(first)
    expect(drainDelayWarnings()).toEqual([])
    await listen(first)
    expect(drainDelayWarnings()).toHaveLength(1)
    const second = server()
    await listen(second)
    shutdown.attach(second)
    expect(drainDelayWarnings()).toHaveLength(1)
    await shutdown.close('test')
  })

  it('adds one listener however often a server is attached, and never warns once the Shutdown is closed', async () => {
    process.env.KUBERNETES_SERVICE_HOST = '10.0.0.1'
    const { logger, drainDelayWarnings } = capture()
    const shutdown = createShutdown({ signals: false, logger })
    const late = server()
    shutdown.attach(late)
    const listeners = late.listenerCount('listening')
    for (let i = 0; i < 12; i++) shutdown.attach(late)
    expect(late.listenerCount('listening')).toBe(listeners)
    await shutdown.close('test')
    await listen(late)
    expect(drainDelayWarnings()).toEqual([])
  })

  it('warns for a server already listening when attached, and never with a drain delay or outside Kubernetes', async () => {
    process.env.KUBERNETES_SERVICE_HOST = '10.0.0.1'
    const zero = capture()
    const listening = server()
    await listen(listening)
    const shutdown = createShutdown({ signals: false, logger: zero.logger })
    shutdown.attach(listening)
    expect(zero.drainDelayWarnings()).toHaveLength(1)
    await shutdown.close('test')

    const delayed = capture()
    const withDelay = createShutdown({ signals: false, logger: delayed.logger, drainDelayMs: 100 })
    const other = server()
    await listen(other)
    withDelay.attach(other)
    delete process.env.KUBERNETES_SERVICE_HOST
    const outside = capture()
    const elsewhere = createShutdown({ signals: false, logger: outside.logger })
    const third = server()
    await listen(third)
    elsewhere.attach(third)
    expect([...delayed.drainDelayWarnings(), ...outside.drainDelayWarnings()]).toEqual([])
    await Promise.all([withDelay.close('test'), elsewhere.close('test')])
  })
})

import dns from 'node:dns'
import net from 'node:net'
import { deferred, request, until, within } from '@lameduck/test-utils'
import Fastify from 'fastify'
import { afterEach, describe, expect, it } from 'vitest'
import { graceful } from '../src/index.js'

/** Whether this machine can listen on the IPv6 loopback at all (a container may have none). */
const hasIpv6Loopback = await new Promise<boolean>((resolve) => {
  const probe = net.createServer()
  probe.once('error', () => resolve(false))
  probe.listen(0, '::1', () => probe.close(() => resolve(true)))
})

const realLookup = dns.lookup
afterEach(() => {
  dns.lookup = realLookup
})

/**
 * Name resolution as on a machine whose hosts file maps `localhost` to both loopbacks (macOS, most
 * distributions, Docker): this one maps it to 127.0.0.1 only. Fastify asks for every address of
 * `localhost` when it listens there, its default host.
 */
function resolveLocalhostToBoth(): void {
  dns.lookup = ((hostname: string, options: unknown, callback: unknown) => {
    if (hostname === 'localhost' && typeof options === 'object' && (options as dns.LookupAllOptions)?.all) {
      const addresses = [
        { address: '127.0.0.1', family: 4 },
        { address: '::1', family: 6 },
      ]
      process.nextTick(callback as (error: null, addresses: dns.LookupAddress[]) => void, null, addresses)
      return
    }
    return (realLookup as (...args: unknown[]) => void)(hostname, options, callback)
  }) as typeof dns.lookup
}

function connectTo(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, host)
    socket.once('connect', () => resolve(socket))
    socket.once('error', reject)
  })
}

describe('Fastify listening on localhost (its default host), which is also ::1', () => {
  it.skipIf(!hasIpv6Loopback)(
    "the ::1 server Fastify adds is attached: its listener closes at the signal and its idle connections are closed, while app.server's request completes",
    async () => {
      resolveLocalhostToBoth()
      const app = Fastify({ logger: false })
      await app.register(graceful, { signals: false, logger: false, timeoutMs: 5_000 })
      const parked = deferred<void>()
      const gate = deferred<void>()
      app.get('/slow', async () => {
        parked.resolve()
        await gate.promise
        return 'slow'
      })
      try {
        await app.listen({ port: 0 })
        const port = (app.server.address() as net.AddressInfo).port
        expect(
          app
            .addresses()
            .map((address) => (address as net.AddressInfo).address)
            .sort(),
        ).toEqual(['127.0.0.1', '::1'])
        // Connected to the second server and never used: no request tells lameduck about it.
        const idle = await connectTo('::1', port)
        const idleClosed = new Promise<void>((resolve) => idle.once('close', () => resolve()))
        const slow = request(port, { path: '/slow' })
        slow.catch(() => undefined) // awaited below; a failure before that must not be unhandled
        await within(2_000, parked.promise, 'the /slow request to park')

        const report = app.shutdown.close('test')
        await until(() => app.shutdown.state === 'stopping', 2_000, 'stopping')
        await expect(connectTo('::1', port)).rejects.toMatchObject({ code: 'ECONNREFUSED' })
        await within(2_000, idleClosed, 'the idle ::1 connection to be closed')
        // app.server still has its request in flight: Fastify would close ::1 only after it.
        expect(app.shutdown.inFlight).toBe(1)

        gate.resolve()
        const response = await within(2_000, slow, 'the /slow response')
        expect(response.status).toBe(200)
        expect(response.body).toBe('slow')
        expect((await within(3_000, report, 'the report')).graceful).toBe(true)
      } finally {
        gate.resolve()
        await app.shutdown.force('test cleanup')
        await app.close()
      }
    },
  )
})

import Fastify from 'fastify'
import { describe, expectTypeOf, it } from 'vitest'
import {
  createShutdown,
  type GracefulOptions,
  graceful,
  type Shutdown,
  type ShutdownReport,
} from '../src/index.js'

describe('types', () => {
  it('merges a read-only `shutdown: Shutdown` into every FastifyInstance', () => {
    const app = Fastify()
    expectTypeOf(app.shutdown).toEqualTypeOf<Shutdown>()
    expectTypeOf(app.shutdown.close()).toEqualTypeOf<Promise<ShutdownReport>>()
    const other = createShutdown()
    // @ts-expect-error the decorator is read-only
    app.shutdown = other
    const h2 = Fastify({ http2: true })
    expectTypeOf(h2.shutdown).toEqualTypeOf<Shutdown>()
  })

  it('registers with the core and adapter options, on http/1 and http2 instances', () => {
    const app = Fastify()
    void app.register(graceful, { timeoutMs: 10_000, health: true, lateRequests: 'refuse' })
    void app.register(graceful)
    void Fastify({ http2: true }).register(graceful, { health: { readyPath: '/ready' } })
    expectTypeOf<GracefulOptions['shutdown']>().toEqualTypeOf<Shutdown | undefined>()
    // @ts-expect-error a typo of timeoutMs
    void app.register(graceful, { timeout: 10_000 })
    // @ts-expect-error lateRequests is 'serve' or 'refuse'
    void app.register(graceful, { lateRequests: 'drop' })
  })
})

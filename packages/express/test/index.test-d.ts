import express from 'express'
import express4 from 'express4'
import { describe, expectTypeOf, it } from 'vitest'
import {
  type GracefulMiddleware,
  type GracefulOptions,
  graceful,
  type Shutdown,
  type ShutdownReport,
} from '../src/index.ts'

describe('types', () => {
  it('mounts on an Express 5 app, router or path, and exposes the Shutdown', () => {
    const mw = graceful({ timeoutMs: 10_000, health: { readyPath: '/ready' }, lateRequests: 'refuse' })
    expectTypeOf(mw).toEqualTypeOf<GracefulMiddleware>()
    expectTypeOf(mw.shutdown).toEqualTypeOf<Shutdown>()
    expectTypeOf(mw.shutdown.close()).toEqualTypeOf<Promise<ShutdownReport>>()
    const app = express()
    app.use(mw)
    app.use('/api', mw)
    express.Router().use(mw)
    expectTypeOf(mw.shutdown.attach(app.listen(0))).toEqualTypeOf<ReturnType<typeof app.listen>>()
  })

  it("mounts on an Express 4 app with Express 4's own types", () => {
    const mw = graceful()
    const app = express4()
    app.use(mw)
    express4.Router().use(mw)
    expectTypeOf(mw.shutdown.attach(app.listen(0))).toEqualTypeOf<ReturnType<typeof app.listen>>()
  })

  it('checks options at compile time too', () => {
    expectTypeOf(graceful).parameter(0).toEqualTypeOf<GracefulOptions | undefined>()
    // @ts-expect-error unknown option
    graceful({ timeout: 1 })
    // @ts-expect-error lateRequests is 'serve' | 'refuse'
    graceful({ lateRequests: 'drop' })
  })

  it('takes options that may be undefined (read from config), under exactOptionalPropertyTypes', () => {
    const config: { timeoutMs: number | undefined; drainDelayMs: number | undefined } = {
      timeoutMs: undefined,
      drainDelayMs: undefined,
    }
    const mw = graceful({ timeoutMs: config.timeoutMs, drainDelayMs: config.drainDelayMs, health: undefined })
    mw.shutdown.onClose('db', () => {}, { timeoutMs: config.timeoutMs })
    expectTypeOf(mw.shutdown.close('x', { drainDelayMs: config.drainDelayMs })).toEqualTypeOf<
      Promise<ShutdownReport>
    >()
  })
})

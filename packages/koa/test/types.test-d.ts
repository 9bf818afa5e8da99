import Koa from 'koa'
import { describe, expectTypeOf, it } from 'vitest'
import { type GracefulMiddleware, type GracefulOptions, graceful, type Shutdown } from '../src/index.js'

describe('types', () => {
  it('graceful() returns a Koa middleware carrying the core Shutdown', () => {
    const mw = graceful({ timeoutMs: 10_000, health: true })
    expectTypeOf(mw).toEqualTypeOf<GracefulMiddleware>()
    expectTypeOf(mw.shutdown).toEqualTypeOf<Shutdown>()
    expectTypeOf(mw).toMatchTypeOf<Koa.Middleware>()
    expectTypeOf(graceful).parameter(0).toEqualTypeOf<GracefulOptions | undefined>()
    new Koa().use(mw)
    new Koa<{ user: string }>().use(mw)
  })

  it('ctx.state.shutdown is typed through the DefaultState augmentation', () => {
    expectTypeOf<Koa.DefaultState['shutdown']>().toEqualTypeOf<Shutdown>()
    new Koa().use(graceful()).use(async (ctx, next) => {
      expectTypeOf(ctx.state.shutdown).toEqualTypeOf<Shutdown>()
      expectTypeOf(ctx.state.shutdown.signal).toEqualTypeOf<AbortSignal>()
      await next()
    })
  })

  it('rejects unknown and mistyped options', () => {
    // @ts-expect-error a typo of timeoutMs
    graceful({ timeout: 1 })
    // @ts-expect-error health is a boolean or an object of paths
    graceful({ health: 'yes' })
    // @ts-expect-error lateRequests is 'serve' or 'refuse'
    graceful({ lateRequests: 'drop' })
  })
})

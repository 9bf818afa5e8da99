import { fileURLToPath } from 'node:url'
import {
  connectOutcome,
  parseResponses,
  rawConnect,
  rawRequest,
  startFixture,
  stopFixtures,
  within,
} from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'

afterEach(stopFixtures)

// The fixtures import the built dist/: run `pnpm --filter @lameduck/fastify build` first (turbo's
// test task depends on build).
const fixtures = {
  ESM: fileURLToPath(new URL('./fixtures/server.mjs', import.meta.url)),
  CJS: fileURLToPath(new URL('./fixtures/server.cjs', import.meta.url)),
}

describe.each(Object.entries(fixtures))(
  'a real SIGTERM to a Fastify process (%s build)',
  (format, script) => {
    it('finishes the slow response with Connection: close, answers a just-used connection cleanly, refuses new ones, runs the hooks after the responses and exits 0', async () => {
      // A long idle grace so the just-used connection is still open when its next request arrives.
      const fixture = await startFixture(script, [], { IDLE_GRACE_MS: '3000' })
      if (format === 'CJS') expect(fixture.output()).toContain('cjs build loaded, shutdown recognised: true')

      const slow = await rawConnect(fixture.port)
      slow.write(rawRequest('GET', '/slow'))
      await fixture.waitForLine('slow handler started')
      const reused = await rawConnect(fixture.port)
      reused.write(rawRequest('GET', '/fast'))
      await reused.waitFor('fast')

      const signalledAt = fixture.kill('SIGTERM')
      // Through Fastify's pino logger (app.log), the core's default here.
      const started = await fixture.waitForLine('shutdown started (SIGTERM)')
      expect(JSON.parse(started)).toMatchObject({ level: 30, reason: 'SIGTERM' })
      reused.write(rawRequest('GET', '/fast'))
      const second = await within(3_000, reused.closed, 'the just-used connection to be answered and closed')
      expect(second.error).toBeUndefined()
      expect(parseResponses(second.data).map((r) => [r.status, r.body, r.headers.connection])).toEqual([
        [200, 'fast', 'keep-alive'],
        [200, 'fast', 'close'],
      ])
      expect(await connectOutcome(fixture.port)).toBe('ECONNREFUSED')

      fixture.child.send('release')
      const first = await within(3_000, slow.closed, 'the slow response and its connection to close')
      expect(first.error).toBeUndefined()
      expect(parseResponses(first.data).map((r) => [r.status, r.body, r.headers.connection])).toEqual([
        [200, 'slow', 'close'],
      ])

      const exit = await within(4_000, fixture.exited, 'the process to exit')
      expect(exit).toMatchObject({ code: 0, signal: null })
      expect(exit.at - signalledAt).toBeLessThan(4_000)
      const output = fixture.output()
      const at = (text: string) => {
        const index = output.indexOf(text)
        expect(index, `${text} in the output:\n${output}`).toBeGreaterThan(-1)
        return index
      }
      // The order: response, core hooks (newest first), then Fastify's close, then the report.
      expect(at('slow handler done')).toBeLessThan(at('core onClose: flushed'))
      expect(at('core onClose: flushed')).toBeLessThan(at('fastify onClose: pool closed'))
      expect(at('fastify onClose: pool closed')).toBeLessThan(at('closed (SIGTERM) gracefully'))
      expect(output.split('fastify onClose: pool closed')).toHaveLength(2)
      expect(output.split('core onClose: flushed')).toHaveLength(2)
    })
  },
)

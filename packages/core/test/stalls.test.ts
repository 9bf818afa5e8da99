// A request sent on an idle keep-alive socket while the server's event loop is stalled, right after
// stopping began, must be answered — not closed under (FIN without an answer, or RST). Found behind
// nginx on a starved machine (history in e2e/repro/README.md): judging "quiet" by the clock alone cannot see
// requests still unread in the kernel after a stall, before the poll phase or inside it.
import { fileURLToPath } from 'node:url'
import { rawConnect, rawRequest, startFixture, stopFixtures, within } from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'

const fixture = fileURLToPath(new URL('./fixtures/stall.mjs', import.meta.url))
afterEach(stopFixtures)

describe('idle sockets and a stalled event loop', () => {
  it.each(['before', 'inside'])(
    'answers a request that arrived during a stall %s the poll phase, as the connection’s last',
    async (where) => {
      const app = await startFixture(fixture, [], { FIXTURE_STALL: where })
      const raw = await rawConnect(app.port)
      raw.write(rawRequest('GET', '/first'))
      await raw.waitFor('ok /first')
      app.kill('SIGTERM')
      await app.waitForLine('stalling')
      // Lands in the server's receive buffer while its loop is stalled.
      raw.write(rawRequest('GET', '/second'))
      const { data, error } = await within(5_000, raw.closed, 'the connection to close')
      expect(error).toBeUndefined()
      const second = data.slice(data.indexOf('ok /first') + 'ok /first'.length)
      expect(second).toMatch(/^HTTP\/1\.1 200 OK\r\n/)
      expect(second).toMatch(/\r\nConnection: close\r\n/i)
      expect(second.endsWith('ok /second')).toBe(true)
      expect((await within(5_000, app.exited, 'the server to exit')).code).toBe(0)
    },
  )
})

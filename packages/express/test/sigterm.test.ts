import { fileURLToPath } from 'node:url'
import {
  keepAliveAgent,
  parseResponses,
  rawConnect,
  rawRequest,
  request,
  startFixture,
  stopFixtures,
  within,
} from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { tryConnect } from './helpers/net.ts'

// The fixture imports ../../dist: run `pnpm --filter @lameduck/express build` first.
const SERVER = fileURLToPath(new URL('./fixtures/server.mjs', import.meta.url))

afterEach(stopFixtures)

const cases = [
  { express: 'express', name: 'Express 5', late: 'serve', attach: true },
  { express: 'express', name: 'Express 5', late: 'refuse', attach: false },
  { express: 'express4', name: 'Express 4', late: 'serve', attach: false },
  { express: 'express4', name: 'Express 4', late: 'refuse', attach: true },
] as const

describe.each(cases)(
  'a real SIGTERM: $name, lateRequests $late, attach $attach',
  ({ express, late, attach }) => {
    it('finishes the slow response, answers the second connection cleanly, refuses new ones and exits 0', async () => {
      const fixture = await startFixture(SERVER, [], {
        EXPRESS: express,
        LATE: late,
        ATTACH: attach ? '1' : '0',
      })
      const { port } = fixture
      const agent = keepAliveAgent()
      const slow = request(port, { agent, path: '/slow' })
      slow.catch(() => {}) // awaited below; a failure earlier must not also surface as an unhandled rejection
      await fixture.waitForLine('slow started')
      // A second keep-alive connection, just used.
      const second = await rawConnect(port)
      second.write(rawRequest('GET', '/fast'))
      await second.waitFor(/\r\n\r\nfast$/)

      const signalledAt = fixture.kill('SIGTERM')
      await fixture.waitForLine('state stopping')
      second.write(rawRequest('GET', '/fast'))
      const { data, error } = await within(
        3_000,
        second.closed,
        'the second connection to close after its last request',
      )
      expect(error).toBeUndefined()
      const [first, last, ...more] = parseResponses(data)
      expect([first?.status, first?.headers.connection, more.length]).toEqual([200, 'keep-alive', 0])
      if (late === 'serve') {
        expect([last?.status, last?.body, last?.headers.connection]).toEqual([200, 'fast', 'close'])
      } else {
        expect([
          last?.status,
          last?.headers.connection,
          last?.headers['retry-after'],
          last?.headers['x-powered-by'],
        ]).toEqual([503, 'close', '5', undefined])
        expect(last?.body).toBe(
          '{"error":"Service Unavailable","message":"Service Unavailable","statusCode":503}',
        )
      }
      expect(await tryConnect(port)).toBe('ECONNREFUSED')

      fixture.child.send('release')
      const response = await within(3_000, slow, 'the slow response')
      expect([response.status, response.body, response.headers.connection]).toEqual([
        200,
        'slow done',
        'close',
      ])

      const exit = await within(4_000, fixture.exited, 'the process to exit on its own')
      expect([exit.code, exit.signal]).toEqual([0, null])
      // Prompt: nowhere near the 60 s keep-alive timeout, and not pushed out by the exit watchdog.
      expect(exit.at - signalledAt).toBeLessThan(4_000)
      const output = fixture.output()
      expect(output).not.toContain('did not exit within')
      // stdout lines only (stderr arrives on another pipe, so its order against stdout is not reliable).
      const stdout = output.split('\n').filter((line) => /^(state |slow |fast |onClose)/.test(line))
      const served = late === 'serve' ? ['fast finished'] : []
      expect(stdout).toEqual([
        'slow started',
        'fast finished',
        'state draining',
        'state stopping',
        ...served,
        'slow finished',
        'state closing',
        'onClose: db pool closed',
        'state closed',
      ])
      agent.destroy()
    })
  },
)

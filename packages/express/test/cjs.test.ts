import { fileURLToPath } from 'node:url'
import { request, startFixture, stopFixtures, within } from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'

// test/fixtures/require.cjs loads the built package with require() (run `pnpm build` first).
const script = fileURLToPath(new URL('./fixtures/require.cjs', import.meta.url))

afterEach(stopFixtures)

describe('the CommonJS build', () => {
  it("require('@lameduck/express') gives graceful, and one SIGTERM closes the CJS and ESM copies once", async () => {
    const fixture = await startFixture(script)
    expect(fixture.output()).toContain('graceful is a function; createShutdown is a function')
    expect(fixture.output()).toContain('mw.shutdown is a Shutdown: true')

    const ready = await within(2_000, request(fixture.port, { path: '/readyz' }), 'the readiness probe')
    expect([ready.status, JSON.parse(ready.body)]).toEqual([200, { status: 'serving' }])
    const fast = await within(2_000, request(fixture.port, { path: '/fast' }), 'a request')
    expect([fast.status, fast.body]).toEqual([200, 'fast'])

    fixture.kill('SIGTERM')
    const exit = await within(4_000, fixture.exited, 'the process to exit')
    expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 0, signal: null })
    const lines = fixture.output().split('\n')
    const count = (line: string) => lines.filter((l) => l === line).length
    expect([count('onClose cjs'), count('onClose esm'), count('exit 0')]).toEqual([1, 1, 1])
  })
})

import { fileURLToPath } from 'node:url'
import { startFixture, stopFixtures, within } from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'

const dual = fileURLToPath(new URL('./fixtures/dual.mjs', import.meta.url))
afterEach(stopFixtures)

describe('two copies of the package in one process (ESM and CommonJS)', () => {
  it('install one listener per signal, close every Shutdown, and exit once', async () => {
    const app = await startFixture(dual)
    expect(app.output()).toContain('listeners SIGTERM=1 SIGINT=1')
    expect(app.output()).toContain('brand true')
    app.kill('SIGTERM')
    const exit = await within(3_000, app.exited, 'the process to exit')
    expect(exit.code).toBe(0)
    const out = app.output()
    expect(out).toContain('closed copy 0')
    expect(out).toContain('closed copy 1')
    expect(out.match(/^exit /gm)).toHaveLength(1)
  })

  it('exit with the highest exit code of all Shutdowns', async () => {
    const app = await startFixture(dual, [], { FIXTURE_CODES: '[0, 7]' })
    app.kill('SIGTERM')
    const exit = await within(3_000, app.exited, 'the process to exit')
    expect(exit.code).toBe(7)
  })
})

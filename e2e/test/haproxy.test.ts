import { afterAll, describe, inject, test } from 'vitest'
import { RUN_BUDGET_MS, runCell } from '../src/cell.ts'
import { stopAllChildren } from '../src/children.ts'
import { APPS, HAPROXY_CELLS, RUNS, runOptions } from '../src/settings.ts'

// Issue 10 (1) and (3): behind HAProxy with active readiness checks, a rolling restart under
// keep-alive load costs no client a request and HAProxy never has to retry one; every old
// process exits 0 within drainDelayMs + 250 ms. Judged for each app of E2E_APP, one describe each.

// A run cut short by the test timeout still ends everything it started, by PID.
afterAll(stopAllChildren)

for (const app of APPS) {
  describe(app, () => {
    for (const cell of HAPROXY_CELLS) {
      test(cell.name, { timeout: RUNS * RUN_BUDGET_MS }, async ({ skip }) => {
        await runCell(inject('proxies').haproxy, cell, RUNS, runOptions(app), skip)
      })
    }
  })
}

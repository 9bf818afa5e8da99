import { afterAll, inject, test } from 'vitest'
import { RUN_BUDGET_MS, runCell } from '../src/cell.ts'
import { stopAllChildren } from '../src/children.ts'
import { HAPROXY_CELLS, RUN_OPTIONS, RUNS } from '../src/settings.ts'

// Issue 10 (1) and (3): behind HAProxy with active readiness checks, a rolling restart under
// keep-alive load costs no client a request and HAProxy never has to retry one; every old
// process exits 0 within drainDelayMs + 250 ms.

// A run cut short by the test timeout still ends everything it started, by PID.
afterAll(stopAllChildren)

for (const cell of HAPROXY_CELLS) {
  test(cell.name, { timeout: RUNS * RUN_BUDGET_MS }, async ({ skip }) => {
    await runCell(inject('proxies').haproxy, cell, RUNS, RUN_OPTIONS, skip)
  })
}

import { afterAll, inject, test } from 'vitest'
import { RUN_BUDGET_MS, runCell } from '../src/cell.ts'
import { stopAllChildren } from '../src/children.ts'
import { NGINX_CELLS, RUN_OPTIONS, RUNS } from '../src/settings.ts'

// Issue 10 (2) and (3): behind nginx with its default proxy_next_upstream (no active checks), a
// rolling restart under keep-alive load costs no client a request, POSTs included; nginx's error log
// shows refused connections only, at most 3 failed attempts per restart; every old process exits 0
// within drainDelayMs + 250 ms.

// A run cut short by the test timeout still ends everything it started, by PID.
afterAll(stopAllChildren)

for (const cell of NGINX_CELLS) {
  test(cell.name, { timeout: RUNS * RUN_BUDGET_MS }, async ({ skip }) => {
    await runCell(inject('proxies').nginx, cell, RUNS, RUN_OPTIONS, skip)
  })
}

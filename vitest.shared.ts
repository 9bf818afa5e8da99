// Test settings every workspace package shares. Keeping them here means CI's reporting hook
// (.ci/run sets LAMEDUCK_VITEST_JSON_DIR) works for every package without each one repeating it.
// turbo.json lists that variable in the test task's passThroughEnv: turbo 2 runs tasks in strict env
// mode and would otherwise drop it before vitest starts.
//
// A package wires it up in its vitest.config.ts:
//
//   import { defineConfig } from 'vitest/config'
//   import { sharedTestConfig } from '../../vitest.shared.ts'
//
//   export default defineConfig({ test: sharedTestConfig('@lameduck/core') })
//
// Spread it to add options: `test: { ...sharedTestConfig(name), setupFiles: [...] }`.
//
// The `.ts` import needs "allowImportingTsExtensions": true in the package's tsconfig.json (allowed
// because it has noEmit). Without it tsc reports TS5097 on vitest.config.ts, and since typecheck is
// enabled below, vitest reports that as an unhandled source error and `vitest run` exits 1 even
// though every test passed. Importing '../../vitest.shared.js' instead also works (tsc maps it to the
// .ts file under nodenext, and vite's config loader resolves it the same way).
import { resolve } from 'node:path'
import type { InlineConfig } from 'vitest/node'

export function sharedTestConfig(packageName: string) {
  const jsonDir = process.env.LAMEDUCK_VITEST_JSON_DIR
  // One file per package: turbo runs the packages in parallel, so they can't share one report.
  // The name is flattened so a scoped name like '@lameduck/core' does not create a subdirectory.
  const reportFile = jsonDir ? resolve(jsonDir, `${packageName.replace(/[@/]/g, '_')}.json`) : undefined

  return {
    // Setting `reporters` replaces vitest's defaults, so 'default' stays first to keep the usual console
    // output. This also drops the 'github-actions' reporter vitest would add on GitHub Actions.
    reporters: reportFile ? ['default', 'json'] : ['default'],
    ...(reportFile ? { outputFile: { json: reportFile } } : {}),
    // The tests start real servers and wait for connections to close, which can take longer than
    // vitest's defaults (5s per test, 10s per hook) on a busy CI machine.
    testTimeout: 15_000,
    hookTimeout: 15_000,
    include: ['test/**/*.test.ts'],
    // Type-level tests (*.test-d.ts) go through tsc in the same `vitest run`, so they are included
    // in the pass/fail counts.
    typecheck: { enabled: true, include: ['test/**/*.test-d.ts'] },
  } satisfies InlineConfig
}

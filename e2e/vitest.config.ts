import { defineConfig } from 'vitest/config'
import { sharedTestConfig } from '../vitest.shared.ts'

// The suite runs real proxies and app processes on a 2-core machine: one file at a time, so the
// cells never compete with each other for the CPU. Each cell's own timeout scales with E2E_RUNS.
export default defineConfig({
  test: {
    ...sharedTestConfig('@lameduck/e2e'),
    globalSetup: ['./src/setup.ts'],
    fileParallelism: false,
    hookTimeout: 60_000,
  },
})

import { defineConfig } from 'vitest/config'
import { sharedTestConfig } from '../../vitest.shared.ts'

// One file: it runs the built CLI (dist/), which turbo builds before `test`.
export default defineConfig({
  test: { ...sharedTestConfig('@lameduck/demo'), testTimeout: 40_000, fileParallelism: false },
})

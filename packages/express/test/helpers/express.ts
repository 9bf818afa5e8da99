import { createRequire } from 'node:module'
import express5 from 'express'
import express4 from 'express4'

/**
 * The `express` default export. Express 4 (typed by `@types/express4`) is used through Express 5's
 * types here: the tests only call API the two share. index.test-d.ts checks the middleware against
 * each major's own types.
 */
export type ExpressFactory = typeof express5

const require = createRequire(import.meta.url)

/** Both supported majors, installed side by side (`express4` is a pnpm alias): for `describe.each`. */
export const expressVersions: ReadonlyArray<{
  name: string
  express: ExpressFactory
  major: number
  version: string
}> = [
  {
    name: 'Express 4',
    express: express4 as unknown as ExpressFactory,
    major: 4,
    version: require('express4/package.json').version,
  },
  { name: 'Express 5', express: express5, major: 5, version: require('express/package.json').version },
]

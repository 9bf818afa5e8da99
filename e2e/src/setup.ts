import type { TestProject } from 'vitest/node'
import { ensureProxies, type Proxies } from './install.ts'

declare module 'vitest' {
  export interface ProvidedContext {
    proxies: Proxies
  }
}

/** vitest globalSetup: finds (or installs) haproxy and nginx once, before any test file runs. */
export default async function setup(project: TestProject): Promise<void> {
  const proxies = await ensureProxies((line) => console.log(line))
  for (const [name, tool] of Object.entries(proxies)) {
    console.log(
      tool.path === undefined
        ? `e2e: ${name} unavailable, its cells will be skipped: ${tool.reason}`
        : `e2e: ${name}: ${tool.version} (${tool.path})`,
    )
  }
  project.provide('proxies', proxies)
}

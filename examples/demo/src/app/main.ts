/**
 * The demo's app, run as a child process by the CLI:
 *
 *   node dist/app.js --framework express|koa|fastify --mode lameduck|baseline --journal <file>
 *                    [--port 0] [--timeout-ms 2000] [--hook-timeout-ms 500] [--idle-grace-ms 50]
 *
 * Prints `ready <port>` once listening. Under lameduck it also prints `report <json>` when the
 * shutdown ends; lameduck's own log lines go to stderr.
 */
import type { Server } from 'node:http'
import { parseArgs } from 'node:util'
import type { AppContext, ShutdownMode } from './context.js'
import { openJournal } from './journal.js'

type Start = (ctx: AppContext) => Promise<Server>

const FRAMEWORKS: Record<string, () => Promise<{ startLameduck: Start; startBaseline: Start }>> = {
  express: () => import('./express.js'),
  koa: () => import('./koa.js'),
  fastify: () => import('./fastify.js'),
}

const { values } = parseArgs({
  options: {
    framework: { type: 'string', default: 'express' },
    mode: { type: 'string', default: 'lameduck' },
    journal: { type: 'string' },
    port: { type: 'string', default: '0' },
    'timeout-ms': { type: 'string', default: '2000' },
    'hook-timeout-ms': { type: 'string', default: '500' },
    'idle-grace-ms': { type: 'string', default: '50' },
  },
})

const load = FRAMEWORKS[values.framework]
const mode = values.mode as ShutdownMode
if (load === undefined || (mode !== 'lameduck' && mode !== 'baseline') || values.journal === undefined) {
  console.error('usage: app.js --framework express|koa|fastify --mode lameduck|baseline --journal <file>')
  process.exit(2)
}

async function main(start: NonNullable<typeof load>, journalPath: string): Promise<void> {
  const app = await start()
  const journal = await openJournal(journalPath)
  const ctx: AppContext = {
    journal,
    port: Number(values.port),
    timeoutMs: Number(values['timeout-ms']),
    idleGraceMs: Number(values['idle-grace-ms']),
    hookTimeoutMs: Number(values['hook-timeout-ms']),
    printReport: (report) => console.log(`report ${JSON.stringify(report)}`),
  }
  const server = await (mode === 'lameduck' ? app.startLameduck(ctx) : app.startBaseline(ctx))
  const address = server.address()
  console.log(`ready ${typeof address === 'object' && address !== null ? address.port : address}`)
}

main(load, values.journal).catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})

// Repro server for a reset found by the e2e suite (nginx, drainDelayMs 1000, a starved machine):
// see README.md.
//   node stalled-poll-client.mjs [path to a core build, default ../../packages/core/dist/index.js]
import { stat } from 'node:fs'
import http from 'node:http'
import { fileURLToPath } from 'node:url'

const core = process.argv[2] ?? new URL('../../packages/core/dist/index.js', import.meta.url).href
const { createShutdown, onResponseClosed, writeRefusal } = await import(core)
const shutdown = createShutdown({ drainDelayMs: 0, logger: false })
const server = http.createServer((req, res) => {
  const release = shutdown.enter(req, res)
  if (release === undefined) return writeRefusal(req, res, shutdown.refusal(req))
  onResponseClosed(res, release)
  res.end(`ok ${req.url}`)
})
shutdown.attach(server)

function stall(ms) {
  const until = Date.now() + ms
  while (Date.now() < until) {}
}

shutdown.on('statechange', (state) => {
  if (state !== 'stopping') return
  // After stop() has scheduled the idle reaper (its timer, then setImmediate: after the next poll
  // phase). An I/O completion is queued for that very poll phase, and its callback stalls the loop:
  // it stands in for a process descheduled while it handles what the poll returned. The 5 ms make
  // sure the reaper's timer is due and the stat has completed before the loop turns.
  process.nextTick(() => {
    stat(fileURLToPath(import.meta.url), () => {
      console.log('stalling')
      stall(300)
    })
    stall(5)
  })
})
server.listen(0, '127.0.0.1', () => console.log(`ready ${server.address().port}`))

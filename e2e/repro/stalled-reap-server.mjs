// Repro server for a reset found by the e2e suite (nginx, drainDelayMs 0): see README.md.
//   node stalled-reap-client.mjs [path to a core build, default ../../packages/core/dist/index.js]
import http from 'node:http'

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
shutdown.on('statechange', (state) => {
  if (state !== 'stopping') return
  // Stands in for anything that keeps the loop from polling for a while right after stopping began:
  // a descheduled process on a busy machine, a GC pause, synchronous work.
  process.nextTick(() => {
    console.log('stalling')
    const until = Date.now() + 300
    while (Date.now() < until) {}
  })
})
server.listen(0, '127.0.0.1', () => console.log(`ready ${server.address().port}`))

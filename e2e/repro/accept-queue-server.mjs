// Repro server for resets found by the e2e suite (nginx, drainDelayMs 0, busy machine): see README.md.
//   node accept-queue-client.mjs [path to a core build, default ../../packages/core/dist/index.js]
import http from 'node:http'

const core = process.argv[2] ?? new URL('../../packages/core/dist/index.js', import.meta.url).href
const { createShutdown, onResponseClosed, writeRefusal } = await import(core)
const shutdown = createShutdown({ drainDelayMs: 0, logger: false })
const server = http.createServer((req, res) => {
  const release = shutdown.enter(req, res)
  if (release === undefined) return writeRefusal(req, res, shutdown.refusal(req))
  onResponseClosed(res, release)
  if (req.url.startsWith('/busy')) {
    // A handler (or a starved process) holding the event loop for a while.
    console.log(`busy ${req.url}`)
    const until = Date.now() + 300
    while (Date.now() < until) {}
  }
  res.end(`ok ${req.url}`)
})
shutdown.attach(server)
server.listen(0, '127.0.0.1', () => console.log(`ready ${server.address().port}`))

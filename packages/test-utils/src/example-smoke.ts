import http from 'node:http'
import { afterEach, expect, it } from 'vitest'
import { startFixture, stopFixtures } from './fixture.js'
import { rawConnect, rawRequest, request } from './http.js'
import { deferred, within } from './wait.js'

/** Opens an SSE stream; resolves `opened` on the first bytes and `ended` when the response closes. */
function openStream(port: number, path: string) {
  const opened = deferred()
  const ended = new Promise<{ status: number; complete: boolean; body: string }>((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        body += chunk
        opened.resolve()
      })
      res.on('error', () => {}) // judged on 'close' from `complete`
      res.on('close', () => resolve({ status: res.statusCode ?? 0, complete: res.complete, body }))
    })
    req.on('error', reject)
  })
  return { opened: opened.promise, ended }
}

/**
 * The smoke test every example in `examples/` runs: start `server` (a path) as a child, open an SSE
 * stream and a slow request, queue a tracked job, send a real SIGTERM, and check that the slow
 * request completes with `Connection: close`, the stream ends cleanly (one begun after the signal
 * too), the process exits 0, and the log shows job → close hook → report. `closeHooks` is how many hooks the report lists.
 */
export function smokeTestExample(server: string, closeHooks = 1): void {
  afterEach(stopFixtures)
  it('on SIGTERM the slow request completes, the SSE stream ends cleanly, the hook runs last, exit 0', async () => {
    const app = await startFixture(server, [], { PORT: '0', HOST: '127.0.0.1' })
    expect((await request(app.port, { path: '/readyz' })).status).toBe(200)

    const stream = openStream(app.port, '/events')
    await within(3000, stream.opened, 'the first SSE event')
    const slow = request(app.port, { path: '/slow?ms=800', agent: false })
    await app.waitForLine('slow: working for 800 ms', 3000)
    expect((await request(app.port, { method: 'POST', path: '/jobs', agent: false })).status).toBe(202)
    // A kept-alive connection whose next request, for a stream, comes once stopping has begun: the
    // request line now, the rest after the signal (the started head keeps the connection open).
    const late = await rawConnect(app.port)
    late.write(rawRequest('GET', '/readyz'))
    await late.waitFor('"status":"serving"')
    const events = rawRequest('GET', '/events')
    const requestLine = events.indexOf('\r\n') + 2
    late.write(events.slice(0, requestLine))

    const signalledAt = app.kill('SIGTERM')
    await app.waitForLine(/stopping: listener closed/, 3000)
    late.write(events.slice(requestLine))

    const answer = await within(5000, slow, 'the slow request to complete')
    expect(answer.status).toBe(200)
    expect(JSON.parse(answer.body)).toEqual({ done: true, ms: 800 })
    expect(answer.headers.connection).toBe('close')

    const ended = await within(5000, stream.ended, 'the SSE stream to end')
    expect(ended.status).toBe(200)
    expect(ended.complete).toBe(true)
    expect(ended.body).toMatch(/^id: 0\ndata: hello\n\n/)
    expect(ended.body).toMatch(/event: bye\ndata: server shutting down, reconnect elsewhere\n\n$/)

    // shutdown.signal had aborted before that stream began: it ends at once, not at the deadline.
    const lateStream = await within(5000, late.closed, 'the stream begun while stopping to end')
    expect(lateStream.error).toBeUndefined()
    const lateHead = lateStream.data.slice(lateStream.data.lastIndexOf('HTTP/1.1 '))
    expect(lateHead).toMatch(/^HTTP\/1\.1 200 /)
    expect(lateHead).toMatch(/\r\nconnection: close\r\n/i)
    expect(lateHead).toMatch(/event: bye\ndata: server shutting down, reconnect elsewhere\n\n/)

    const exit = await within(5000, app.exited, 'the process to exit')
    expect(exit).toMatchObject({ code: 0, signal: null })
    expect(exit.at - signalledAt).toBeLessThan(4000)

    const output = app.output()
    const job = output.indexOf('job: report sent')
    const hook = output.indexOf('metrics: flushed (')
    const closed = output.search(
      new RegExp(
        String.raw`closed \(SIGTERM\) gracefully in \d+ ms: requests \d+ completed, 0 refused, 0 forced; tasks 1 completed, 0 failed, 0 aborted; hooks ${closeHooks} ok, 0 failed; exit code 0`,
      ),
    )
    expect(job, output).toBeGreaterThan(-1)
    expect(hook, output).toBeGreaterThan(job) // the close hook runs after the tracked job
    expect(closed, output).toBeGreaterThan(hook)
  })
}

import {
  closeServer,
  parseResponses,
  rawConnect,
  rawRequest,
  request,
  until,
  within,
} from '@lameduck/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import { startApp, type TestApp } from './helpers/app.js'

let app: TestApp | undefined
afterEach(async () => {
  if (app) await closeServer(app.server)
  app = undefined
})

describe('pipelined requests across the gate', () => {
  it('answers every request pipelined before stopping, closing after the newest one', async () => {
    app = await startApp({ timeoutMs: 5_000 })
    const raw = await rawConnect(app.port)
    raw.write(rawRequest('GET', '/slow') + rawRequest('GET', '/slow'))
    const first = await within(2_000, app.nextParked(), 'the first request to park')
    const second = await within(2_000, app.nextParked(), 'the pipelined request to park')
    const report = app.shutdown.close('test')
    first.resolve()
    second.resolve()
    const { data, error } = await within(3_000, raw.closed, 'the connection to close')
    expect(error).toBeUndefined()
    expect(parseResponses(data).map((r) => [r.status, r.body, r.headers.connection])).toEqual([
      [200, 'ok /slow', 'keep-alive'],
      [200, 'ok /slow', 'close'],
    ])
    expect((await report).requests.completed).toBe(2)
  })

  it('never drops a response already written behind a slower one: the socket is reaped once idle', async () => {
    app = await startApp({ timeoutMs: 5_000 })
    const raw = await rawConnect(app.port)
    raw.write(rawRequest('GET', '/slow') + rawRequest('GET', '/two'))
    const gate = await within(2_000, app.nextParked(), 'the first request to park')
    await until(() => app?.hits.includes('/two') === true, 2_000, 'the pipelined request to be answered')
    const report = app.shutdown.close('test')
    gate.resolve()
    const { data, error } = await within(3_000, raw.closed, 'the connection to close')
    expect(error).toBeUndefined()
    expect(parseResponses(data).map((r) => [r.status, r.body])).toEqual([
      [200, 'ok /slow'],
      [200, 'ok /two'],
    ])
    expect((await report).graceful).toBe(true)
  })

  it("refuses requests pipelined behind a connection's last response without running their handlers", async () => {
    app = await startApp({ timeoutMs: 5_000, idleGraceMs: 1_000 })
    const raw = await rawConnect(app.port)
    raw.write(rawRequest('GET', '/first'))
    await raw.waitFor('ok /first')
    const busy = request(app.port, { path: '/slow' })
    const gate = await within(2_000, app.nextParked(), 'a request keeping the server busy')
    const report = app.shutdown.close('test')
    await until(() => app?.shutdown.state === 'stopping', 2_000, 'stopping')
    raw.write(
      rawRequest('GET', '/last') +
        rawRequest('POST', '/behind', {}, 'x'.repeat(10)) +
        rawRequest('GET', '/behind2'),
    )
    const { data, error } = await within(3_000, raw.closed, 'the connection to close')
    expect(error).toBeUndefined()
    expect(parseResponses(data).map((r) => [r.status, r.body])).toEqual([
      [200, 'ok /first'],
      [200, 'ok /last'],
    ])
    expect(app.hits).not.toContain('/behind')
    expect(app.hits).not.toContain('/behind2')
    gate.resolve()
    await busy
    const done = await report
    expect(done.requests.refused).toBeGreaterThanOrEqual(1)
    expect(app.shutdown.inFlight).toBe(0)
  })
})

describe('request bodies and expectations while stopping', () => {
  it('delivers the refusal intact when the request body was never read (no reset)', async () => {
    app = await startApp({ timeoutMs: 5_000, idleGraceMs: 1_000, lateRequests: 'refuse' })
    const raw = await rawConnect(app.port)
    raw.write(rawRequest('GET', '/first'))
    await raw.waitFor('ok /first')
    const busy = request(app.port, { path: '/slow' })
    const gate = await within(2_000, app.nextParked(), 'a request keeping the server busy')
    void app.shutdown.close('test')
    await until(() => app?.shutdown.state === 'stopping', 2_000, 'stopping')
    const body = 'y'.repeat(256 * 1024)
    raw.write(rawRequest('POST', '/echo', { 'content-length': String(body.length) }))
    await raw.waitFor('503 Service Unavailable')
    raw.write(body)
    const { data, error } = await within(3_000, raw.closed, 'the refused connection to close')
    expect(error).toBeUndefined()
    const [, refusal] = parseResponses(data)
    expect(refusal?.status).toBe(503)
    expect(refusal?.body).toBe(
      '{"error":"Service Unavailable","message":"Service Unavailable","statusCode":503}',
    )
    expect(app.hits).not.toContain('/echo')
    gate.resolve()
    await busy
  })

  it('answers Expect: 100-continue with the refusal and no 100 Continue once stopping', async () => {
    app = await startApp({ timeoutMs: 5_000, idleGraceMs: 1_000 })
    const raw = await rawConnect(app.port)
    raw.write(rawRequest('GET', '/first'))
    await raw.waitFor('ok /first')
    const busy = request(app.port, { path: '/slow' })
    const gate = await within(2_000, app.nextParked(), 'a request keeping the server busy')
    void app.shutdown.close('test')
    await until(() => app?.shutdown.state === 'stopping', 2_000, 'stopping')
    raw.write(rawRequest('POST', '/echo', { expect: '100-continue', 'content-length': '5' }))
    const { data } = await within(3_000, raw.closed, 'the connection to close')
    expect(data).not.toContain('100 Continue')
    expect(parseResponses(data).map((r) => r.status)).toEqual([200, 503])
    expect(app.hits).not.toContain('/echo')
    gate.resolve()
    await busy
  })

  it('still sends 100 Continue while serving', async () => {
    app = await startApp({ timeoutMs: 5_000 })
    const raw = await rawConnect(app.port)
    raw.write(rawRequest('POST', '/echo', { expect: '100-continue', 'content-length': '5' }))
    await raw.waitFor('100 Continue')
    raw.write('hello')
    await raw.waitFor('hello')
    raw.socket.destroy()
  })
})

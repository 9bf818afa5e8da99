import http from 'node:http'
import http2 from 'node:http2'
import type { AddressInfo } from 'node:net'
import { PassThrough, Readable } from 'node:stream'
import { text } from 'node:stream/consumers'
import { deferred, keepAliveAgent, request, until, within } from '@lameduck/test-utils'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { afterEach, describe, expect, it } from 'vitest'
import { graceful } from '../src/index.js'
import { parkingHook, startFastify, stopFastifyApps } from './helpers/fastify.js'

afterEach(stopFastifyApps)

describe('counting requests: released once the response has closed and the handler has finished', () => {
  it('counts a request while its handler runs and releases it when the response is sent', async () => {
    const inHandler = deferred<void>()
    const gate = deferred<void>()
    const { app, port } = await startFastify((app) => {
      app.get('/slow', async () => {
        inHandler.resolve()
        await gate.promise
        return 'done'
      })
    })
    const response = request(port, { path: '/slow' })
    await within(2_000, inHandler.promise, 'the handler to run')
    expect(app.shutdown.inFlight).toBe(1)
    gate.resolve()
    expect(await within(2_000, response, 'the response')).toMatchObject({ status: 200, body: 'done' })
    await until(() => app.shutdown.inFlight === 0, 2_000, 'inFlight back to 0')
  })

  it('keeps a streamed response counted until the stream has ended', async () => {
    const body = new PassThrough()
    const { app, port } = await startFastify((app) => {
      app.get('/stream', (_request, reply) => {
        reply.type('text/plain').send(body)
        body.write('first\n')
      })
    })
    const headers = deferred<http.IncomingMessage>()
    const chunks: string[] = []
    const ended = deferred<void>()
    http.get({ host: '127.0.0.1', port, path: '/stream' }, (res) => {
      headers.resolve(res)
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => chunks.push(chunk))
      res.on('end', () => ended.resolve())
    })
    await within(2_000, headers.promise, 'the streamed headers')
    await until(() => chunks.join('') === 'first\n', 2_000, 'the first chunk')
    // The handler returned long ago; the response is still open.
    expect(app.shutdown.inFlight).toBe(1)
    body.end('last\n')
    await within(2_000, ended.promise, 'the stream to end')
    expect(chunks.join('')).toBe('first\nlast\n')
    await until(() => app.shutdown.inFlight === 0, 2_000, 'inFlight back to 0')
  })

  it('adds no second set of listeners to the response of a handler that returns the reply', async () => {
    // What a response carries while its body streams, by event: in a bare Fastify app and with
    // graceful, the same sync handler returning the reply (`return reply.send(…)`, `reply.sendFile`).
    async function listenersWhileStreaming(app: FastifyInstance, register: boolean) {
      if (register) await app.register(graceful, { signals: false, logger: false })
      const body = new PassThrough()
      let raw: http.ServerResponse | undefined
      app.get('/stream', (_request, reply) => {
        raw = reply.raw
        return reply.type('text/plain').send(body)
      })
      await app.listen({ port: 0, host: '127.0.0.1' })
      const firstChunk = deferred<void>()
      const ended = deferred<void>()
      http.get(
        { host: '127.0.0.1', port: (app.server.address() as AddressInfo).port, path: '/stream' },
        (res) => {
          res.once('data', () => firstChunk.resolve())
          res.on('end', () => ended.resolve())
        },
      )
      body.write('first\n')
      await within(2_000, firstChunk.promise, 'the first chunk')
      const counts = Object.fromEntries(
        ['close', 'finish', 'error'].map((event) => [event, raw?.listenerCount(event) ?? -1]),
      )
      body.end('last\n')
      await within(2_000, ended.promise, 'the stream to end')
      await app.close()
      return counts
    }
    const bare = await listenersWhileStreaming(
      Fastify({ logger: false }) as unknown as FastifyInstance,
      false,
    )
    const withGraceful = await listenersWhileStreaming(
      Fastify({ logger: false }) as unknown as FastifyInstance,
      true,
    )
    // Only the core's own 'close' listener, which releases the request.
    expect(withGraceful).toEqual({ ...bare, close: (bare.close ?? 0) + 1 })
  })

  it('keeps an erroring request counted through an async error handler', async () => {
    const inErrorHandler = deferred<void>()
    const gate = deferred<void>()
    const { app, port } = await startFastify((app) => {
      app.setErrorHandler(async (error, _request, reply) => {
        inErrorHandler.resolve()
        await gate.promise
        return reply.code(500).send({ handled: (error as Error).message })
      })
      app.get('/reject', async () => {
        throw new Error('boom')
      })
      app.get('/throw', () => {
        throw new Error('sync boom')
      })
    })
    const response = request(port, { path: '/reject' })
    await within(2_000, inErrorHandler.promise, 'the error handler to run')
    expect(app.shutdown.inFlight).toBe(1)
    gate.resolve()
    expect(await within(2_000, response, 'the error response')).toMatchObject({
      status: 500,
      body: '{"handled":"boom"}',
    })
    await until(() => app.shutdown.inFlight === 0, 2_000, 'inFlight back to 0 after the async error')
    expect(await request(port, { path: '/throw' })).toMatchObject({
      status: 500,
      body: '{"handled":"sync boom"}',
    })
    await until(() => app.shutdown.inFlight === 0, 2_000, 'inFlight back to 0 after the sync throw')
  })

  it('keeps an aborted request counted while its handler still runs, and releases it when the handler ends', async () => {
    const inHandler = deferred<void>()
    const responseClosed = deferred<void>()
    const gate = deferred<void>()
    const handlerDone = deferred<void>()
    const { app, port } = await startFastify((app) => {
      app.get('/slow', async (_request, reply) => {
        // Registered after the plugin's own listener, so it fires after the plugin saw the close.
        reply.raw.once('close', () => responseClosed.resolve())
        inHandler.resolve()
        await gate.promise
        handlerDone.resolve()
        return 'too late'
      })
    })
    const client = http.get({ host: '127.0.0.1', port, path: '/slow' })
    client.on('error', () => {}) // the abort below surfaces as ECONNRESET on the client
    await within(2_000, inHandler.promise, 'the handler to run')
    client.destroy()
    await within(2_000, responseClosed.promise, 'the server to see the abort')
    expect(app.shutdown.inFlight).toBe(1)
    gate.resolve()
    await within(2_000, handlerDone.promise, 'the handler to finish')
    await until(() => app.shutdown.inFlight === 0, 2_000, 'inFlight back to 0')
  })

  it('keeps a request aborted during an async preHandler counted through the handler Fastify still runs', async () => {
    const lookUp = parkingHook()
    const order: string[] = []
    const { app, port } = await startFastify((app) => {
      app.addHook('onClose', async () => {
        order.push('onClose hook')
      })
      app.get('/work', { preHandler: lookUp.hook }, async () => {
        order.push(`handler start, inFlight ${app.shutdown.inFlight}`)
        await new Promise((resolve) => setImmediate(resolve))
        order.push('handler end')
        return 'too late'
      })
    })
    const client = http.get({ host: '127.0.0.1', port, path: '/work' })
    client.on('error', () => {})
    await within(2_000, lookUp.running, 'the preHandler to run')
    client.destroy()
    await within(2_000, lookUp.responseClosed, 'the server to see the abort')
    expect(app.shutdown.inFlight).toBe(1)
    const closing = app.shutdown.close('test')
    await until(() => app.shutdown.state === 'stopping', 2_000, 'stopping')
    lookUp.gate.resolve()
    const report = await within(3_000, closing, 'the shutdown')
    expect(report.graceful).toBe(true)
    expect(report.requests.completed).toBe(1)
    expect(order).toEqual(['handler start, inFlight 1', 'handler end', 'onClose hook'])
  })

  /**
   * Starts `path` on a fresh client over HTTP/1.1 or h2c and returns a function that makes the client
   * leave (socket destroyed, or the stream cancelled with RST_STREAM).
   */
  async function startAndLeave(
    protocol: 'http/1.1' | 'h2c',
    port: number,
    method: string,
    path: string,
    body?: string,
  ): Promise<() => void> {
    const headers = body === undefined ? {} : { 'content-type': 'text/plain', 'content-length': '10' }
    if (protocol === 'h2c') {
      const session = http2.connect(`http://127.0.0.1:${port}`)
      session.on('error', () => {})
      const stream = session.request({ ':method': method, ':path': path, ...headers })
      stream.on('error', () => {})
      if (body === undefined) stream.end()
      else stream.write(body)
      return () => {
        stream.close(http2.constants.NGHTTP2_CANCEL)
        session.close()
      }
    }
    const client = http.request({ host: '127.0.0.1', port, method, path, headers })
    client.on('error', () => {})
    if (body === undefined) client.end()
    else client.write(body)
    return () => client.destroy()
  }

  const protocols = [['http/1.1'], ['h2c']] as const
  const http2Options = (protocol: string) =>
    (protocol === 'h2c' ? { http2: true } : {}) as FastifyServerOptions

  describe.each(protocols)('%s', (protocol) => {
    it.each([
      ['throws (a 401 as an error)', 'throw'],
      ['sends the reply itself', 'send'],
      ['hijacks the reply and ends it raw', 'hijack'],
    ])(
      'releases a request aborted during a preHandler that then %s, without waiting for the deadline',
      async (_, how) => {
        const guard = parkingHook((reply) => {
          if (how === 'throw') throw Object.assign(new Error('no'), { statusCode: 401 })
          if (how === 'send') return reply.code(401).send('no')
          reply.hijack()
          reply.raw.writeHead(401)
          reply.raw.end('no')
        })
        const handlerRan: string[] = []
        const { app, port } = await startFastify(
          (app) => {
            app.get('/guarded', { preHandler: guard.hook }, async () => {
              handlerRan.push('/guarded')
              return 'ok'
            })
          },
          {},
          http2Options(protocol),
        )
        const leave = await startAndLeave(protocol, port, 'GET', '/guarded')
        await within(2_000, guard.running, 'the preHandler to run')
        leave()
        await within(2_000, guard.responseClosed, 'the server to see the abort')
        expect(app.shutdown.inFlight).toBe(1)
        guard.gate.resolve()
        await until(() => app.shutdown.inFlight === 0, 2_000, 'inFlight back to 0')
        expect(handlerRan).toEqual([])
      },
    )

    it.each([
      ['onRequest', 'onRequest'],
      ['preParsing', 'preParsing'],
      ['preParsing that pipes the payload on', 'pipe'],
    ] as const)(
      'releases a body-carrying request whose client left during an async %s hook, once Fastify waits for a body that cannot come',
      async (_, hook) => {
        // A session or rate-limit lookup, say: the client gives up while it runs.
        const lookUp = parkingHook()
        const handlerRan: string[] = []
        const { app, port } = await startFastify(
          (app) => {
            if (hook === 'onRequest') app.addHook('onRequest', lookUp.hook)
            else if (hook === 'preParsing')
              app.addHook('preParsing', (request, reply) => lookUp.hook(request, reply))
            // A decompression or a digest on the way, say: Fastify reads the hook's stream, which
            // the destroyed request never ends.
            else
              app.addHook('preParsing', async (request, reply, payload) => {
                await lookUp.hook(request, reply)
                return payload.pipe(new PassThrough())
              })
            app.post('/upload', async () => {
              handlerRan.push('/upload')
              return 'ok'
            })
          },
          {},
          http2Options(protocol),
        )
        const leave = await startAndLeave(protocol, port, 'POST', '/upload', 'part')
        await within(2_000, lookUp.running, `the ${hook} hook to run`)
        leave()
        await within(2_000, lookUp.responseClosed, 'the server to see the abort')
        // Still counted while the hook runs: the chain may yet go on.
        expect(app.shutdown.inFlight).toBe(1)
        lookUp.gate.resolve()
        await until(() => app.shutdown.inFlight === 0, 2_000, 'inFlight back to 0')
        expect(handlerRan).toEqual([])
        const report = await within(2_000, app.shutdown.close('test'), 'the shutdown')
        expect(report).toMatchObject({ graceful: true, requests: { forced: 0 } })
      },
    )
  })

  it.each(protocols)(
    '%s: keeps a request counted when, its client gone during an async onRequest hook, a preParsing hook reads the body itself',
    async (protocol) => {
      const lookUp = parkingHook()
      const order: string[] = []
      const { app, port } = await startFastify(
        (app) => {
          app.addHook('onRequest', lookUp.hook)
          // A webhook signature check over the raw body, say: it reads the stream itself, and gets an
          // error (HTTP/1.1: the request was destroyed) or what had arrived (h2c: it was ended).
          app.addHook('preParsing', async (_request, _reply, payload) => {
            const body = await text(payload)
            order.push(`preParsing read ${JSON.stringify(body)}`)
            return Readable.from([body])
          })
          app.setErrorHandler(async (error, _request, reply) => {
            await new Promise((resolve) => setImmediate(resolve))
            order.push(
              `error handler (${(error as { code?: string }).code}), inFlight ${app.shutdown.inFlight}`,
            )
            return reply.code(500).send('error')
          })
          app.post('/hook', async () => {
            order.push(`handler, inFlight ${app.shutdown.inFlight}`)
            return 'ok'
          })
          app.shutdown.onClose('pool', () => {
            order.push('onClose hook')
          })
        },
        {},
        http2Options(protocol),
      )
      const leave = await startAndLeave(protocol, port, 'POST', '/hook', 'part')
      await within(2_000, lookUp.running, 'the onRequest hook to run')
      leave()
      await within(2_000, lookUp.responseClosed, 'the server to see the abort')
      const closing = app.shutdown.close('test')
      await until(() => app.shutdown.state === 'stopping', 2_000, 'stopping')
      lookUp.gate.resolve()
      const report = await within(3_000, closing, 'the shutdown')
      expect(report).toMatchObject({ graceful: true, requests: { forced: 0 } })
      // Whichever way the chain went on, it ran counted, and the close hooks after it.
      expect(order.at(-1)).toBe('onClose hook')
      expect(order.slice(0, -1).filter((step) => step.includes('inFlight'))).toEqual([
        expect.stringMatching(/inFlight 1$/),
      ])
    },
  )

  it('releases an aborted request at once when no handler is running (still reading the body)', async () => {
    const responseClosed = deferred<void>()
    const handlerRan: string[] = []
    const { app, port } = await startFastify((app) => {
      app.addHook('onRequest', (_request, reply, done) => {
        reply.raw.once('close', () => responseClosed.resolve())
        done()
      })
      app.post('/upload', async () => {
        handlerRan.push('/upload')
        return 'ok'
      })
    })
    const client = http.request({
      host: '127.0.0.1',
      port,
      method: 'POST',
      path: '/upload',
      headers: { 'content-type': 'text/plain', 'content-length': '100' },
    })
    client.on('error', () => {})
    client.write('only a part of it')
    await until(() => app.shutdown.inFlight === 1, 2_000, 'the request to be counted')
    client.destroy()
    await within(2_000, responseClosed.promise, 'the server to see the abort')
    await until(() => app.shutdown.inFlight === 0, 2_000, 'inFlight back to 0')
    expect(handlerRan).toEqual([])
  })

  it('releases 404s, body errors, hijacked replies and replies sent by a hook', async () => {
    const { app, port } = await startFastify((app) => {
      app.post('/json', async (request) => request.body)
      app.get(
        '/denied',
        { preHandler: async (_request, reply) => reply.code(401).send('no') },
        async () => 'ok',
      )
      app.get('/hijack', (_request, reply) => {
        reply.hijack()
        reply.raw.writeHead(200, { 'content-type': 'text/plain' })
        reply.raw.end('raw')
      })
    })
    const agent = keepAliveAgent()
    expect((await request(port, { agent, path: '/missing' })).status).toBe(404)
    const bad = await request(port, {
      agent,
      method: 'POST',
      path: '/json',
      body: '{nope',
      headers: { 'content-type': 'application/json' },
    })
    expect(bad.status).toBe(400)
    expect(await request(port, { agent, path: '/hijack' })).toMatchObject({ status: 200, body: 'raw' })
    expect(await request(port, { agent, path: '/denied' })).toMatchObject({ status: 401, body: 'no' })
    await until(() => app.shutdown.inFlight === 0, 2_000, 'inFlight back to 0')
    agent.destroy()
  })

  it('still counts routes registered before the plugin, until their response closes', async () => {
    const app = Fastify({ logger: false })
    const gate = deferred<void>()
    const inHandler = deferred<void>()
    app.get('/early', async () => {
      inHandler.resolve()
      await gate.promise
      return 'early'
    })
    await app.register(graceful, { signals: false, logger: false })
    await app.listen({ port: 0, host: '127.0.0.1' })
    try {
      const address = app.server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      const response = request(port, { path: '/early' })
      await within(2_000, inHandler.promise, 'the early route to run')
      expect(app.shutdown.inFlight).toBe(1)
      gate.resolve()
      expect((await within(2_000, response, 'the response')).body).toBe('early')
      await until(() => app.shutdown.inFlight === 0, 2_000, 'inFlight back to 0')
    } finally {
      await app.shutdown.force('test cleanup')
      await app.close()
    }
  })

  it('plain routes work through inject() and are counted the same way', async () => {
    const { app } = await startFastify((app) => {
      app.get('/plain', async () => ({ inFlightDuring: app.shutdown.inFlight }))
    })
    const response = await app.inject({ method: 'GET', url: '/plain' })
    expect(response.statusCode).toBe(200)
    expect(response.json()).toEqual({ inFlightDuring: 1 })
    await until(() => app.shutdown.inFlight === 0, 2_000, 'inFlight back to 0')
  })
})

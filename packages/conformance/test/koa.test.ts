import { type AdapterCapabilities, describeAdapter } from '@lameduck/test-utils'
import { createKoa2App, createKoaApp } from '../../koa/test/app.ts'

const koa: AdapterCapabilities = {
  blocked: {
    // Koa's ctx.onerror removes every header before writing the 500, the core's `Connection: close`
    // on a connection's last response included; Node still closes the socket, unannounced.
    'handler-error': "Koa's error handler strips the last response's Connection: close",
  },
}

describeAdapter('Koa 2', createKoa2App, koa)
describeAdapter('Koa 3', createKoaApp, koa)

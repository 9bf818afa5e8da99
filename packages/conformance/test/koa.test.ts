import { type AdapterCapabilities, describeAdapter } from '@lameduck/test-utils'
import { createKoa2App, createKoaApp } from '../../koa/test/app.ts'

const koa: AdapterCapabilities = {}

describeAdapter('Koa 2', createKoa2App, koa)
describeAdapter('Koa 3', createKoaApp, koa)

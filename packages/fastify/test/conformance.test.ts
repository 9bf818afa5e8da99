import { describeAdapter } from '@lameduck/test-utils'
import { createApp } from './app.js'

// The shared conformance suite (test-utils' adapter-suite.ts), the same scenarios as every adapter.
describeAdapter('@lameduck/fastify', createApp)

import { describeAdapter } from '@lameduck/test-utils'
import { createApp } from '../../fastify/test/app.ts'

describeAdapter('Fastify 5', createApp)

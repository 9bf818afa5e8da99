import { describeAdapter } from '@lameduck/test-utils'
import { createRawApp } from '../src/raw-app.js'

describeAdapter('node:http + core', createRawApp)

import { fileURLToPath } from 'node:url'
import { smokeTestExample } from '@lameduck/test-utils'

smokeTestExample(fileURLToPath(new URL('../server.js', import.meta.url)))

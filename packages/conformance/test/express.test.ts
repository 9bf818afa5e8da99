import { describeAdapter } from '@lameduck/test-utils'
import { adapterApps } from '../../express/test/app.ts'

// Express cannot tell a middleware when a route handler has settled (see graceful()'s TSDoc in
// packages/express/src/index.ts): after a client abort the request is released with its response.
for (const { name, createApp } of adapterApps)
  describeAdapter(name, createApp, { countsHandlerAfterAbort: false })

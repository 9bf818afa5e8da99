export type { AdapterApp, CreateAdapterApp } from './adapter-contract.js'
export {
  type AdapterCapabilities,
  connectOutcome,
  describeAdapter,
  expectRefusalBytes,
  parseWire,
  reached,
  type ScenarioId,
  SUITE_OPTIONS,
  type WireResponse,
} from './adapter-suite.js'
export { smokeTestExample } from './example-smoke.js'
export { createFakeClock, type FakeClock } from './fake-clock.js'
export { type Fixture, signalUntilCounted, startFixture, stopFixtures } from './fixture.js'
export {
  closeServer,
  keepAliveAgent,
  listen,
  parseResponses,
  type RawConnection,
  type RawResponse,
  type RequestOptions,
  type Response,
  rawConnect,
  rawRequest,
  request,
  websocketHandshake,
} from './http.js'
export { tlsCredentials } from './tls.js'
export { type Deferred, deferred, nextEvent, until, within } from './wait.js'

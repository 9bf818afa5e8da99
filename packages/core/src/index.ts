export {
  type AdapterOptions,
  type HealthOption,
  type HealthPaths,
  healthAnswer,
  type RawAnswer,
  resolveAdapterOptions,
} from './adapter.js'
export type { LameduckError, LameduckErrorCode } from './errors.js'
export type { Hook, HookOutcome } from './hooks.js'
export { onResponseClosed, responseClosed, whenSettled } from './lifecycle.js'
export type { Logger } from './logger.js'
export {
  type Clock,
  type LateRequestPolicy,
  type ResolvedOptions,
  resolveOptions,
  type ShutdownOptions,
} from './options.js'
export { type AnyRequest, type AnyResponse, buildRefusal, type Refusal, writeRefusal } from './refusal.js'
export type { AttachableServer } from './server.js'
export {
  type CloseOptions,
  createShutdown,
  type HookOptions,
  isShutdown,
  type Release,
  type Shutdown,
  type ShutdownEvents,
  type ShutdownReport,
  type ShutdownState,
} from './shutdown.js'

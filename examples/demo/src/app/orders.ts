import { setTimeout as sleep } from 'node:timers/promises'
import type { Journal } from './journal.js'

/** How long `POST /orders` works before it answers (a stock check against a slow service). */
export const ORDER_WORK_MS = 300
/** How long the background job started per order runs (sending the receipt). */
export const RECEIPT_WORK_MS = 250

/** What the route handlers need; the same in both shutdown modes except for `runJob`. */
export interface Services {
  readonly journal: Journal
  /**
   * Starts background work that outlives the request: `shutdown.track()` under lameduck, a bare
   * fire-and-forget call in the baseline (what most apps do).
   */
  runJob(label: string, job: (signal: AbortSignal) => Promise<void>): void
}

/** An order as `POST /orders` takes it. */
export interface OrderInput {
  readonly item: string
  readonly qty: number
}

/** Why an order was rejected, for a 400. */
export function invalidOrder(body: unknown): string | undefined {
  if (body === null || typeof body !== 'object') return 'expected a JSON object { item, qty }'
  const { item, qty } = body as Record<string, unknown>
  if (typeof item !== 'string' || item.length === 0) return '"item" must be a non-empty string'
  if (typeof qty !== 'number' || !Number.isInteger(qty) || qty < 1) return '"qty" must be a whole number >= 1'
  return undefined
}

/**
 * Creates the order logic shared by the Express, Koa and Fastify apps: place an order (slow, then
 * journaled and acknowledged), and a receipt job per order that journals its own line when done.
 */
export function createOrders(services: Services) {
  let lastId = 0
  return {
    /** Works for {@link ORDER_WORK_MS}, journals the order, starts its receipt job; resolves with the id. */
    async place(input: OrderInput): Promise<{ id: number }> {
      await sleep(ORDER_WORK_MS)
      const id = ++lastId
      services.journal.append({
        type: 'order',
        id,
        item: input.item,
        qty: input.qty,
        at: new Date().toISOString(),
      })
      services.runJob('receipt', async (signal) => {
        await sleep(RECEIPT_WORK_MS, undefined, { signal })
        services.journal.append({ type: 'receipt', order: id })
      })
      return { id }
    },
  }
}

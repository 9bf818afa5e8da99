import type { Journal } from './journal.js'

/** Which shutdown the app gets: lameduck's, or the one the framework's docs show. */
export type ShutdownMode = 'lameduck' | 'baseline'

/** What `main.ts` hands each framework's app. */
export interface AppContext {
  readonly journal: Journal
  /** Port to listen on, on 127.0.0.1; 0 picks a free one. */
  readonly port: number
  /** lameduck's `timeoutMs`: below the grace period the demo's "orchestrator" gives before SIGKILL. */
  readonly timeoutMs: number
  /** lameduck's `idleGraceMs`: see `Timeline.idleGraceMs` in ../run.ts. */
  readonly idleGraceMs: number
  /** lameduck's bound on the journal's close hook. */
  readonly hookTimeoutMs: number
  /** Prints lameduck's report for the demo to read (one `report <json>` line on stdout). */
  printReport(report: unknown): void
}

/** The baseline's background jobs: started and forgotten, as most apps do. */
export function fireAndForget(label: string, job: (signal: AbortSignal) => Promise<void>): void {
  job(new AbortController().signal).catch((error: unknown) => console.error(`job "${label}" failed`, error))
}

/** Closes the journal and says so on stdout, the same line in every app and mode. */
export async function closeJournal(journal: Journal): Promise<void> {
  const { flushed } = await journal.close()
  console.log(`journal closed: flushed ${flushed} buffered record(s), fsynced`)
}

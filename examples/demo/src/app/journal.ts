import { type FileHandle, open } from 'node:fs/promises'

/** One JSON-lines record. */
export type JournalRecord = Record<string, unknown>

/**
 * An append-only journal of JSON lines behind a write-behind buffer — the way embedded stores and
 * batching clients write: `append()` only buffers, and the caller acknowledges the write at once;
 * a batch is written `lingerMs` after its first record (or sooner once `batchSize` records wait),
 * like Kafka's `linger.ms`. Whatever is still buffered when the process dies is gone, which is why
 * `close()` must run.
 */
export interface Journal {
  /** Buffers `record`; it is written by the next flush. Throws once the journal is closing. */
  append(record: JournalRecord): void
  /** Records buffered and not yet written. */
  readonly pending: number
  /** Writes the buffer, fsyncs, closes the file. Idempotent. Resolves with how many records it flushed. */
  close(): Promise<{ flushed: number }>
}

/** Options of {@link openJournal}. */
export interface JournalOptions {
  /** Milliseconds a batch waits for more records after its first one. Default 1000. */
  lingerMs?: number
  /** A flush starts early once this many records wait. Default 500. */
  batchSize?: number
}

/** Opens (creating or appending to) the journal at `path`. */
export async function openJournal(path: string, options: JournalOptions = {}): Promise<Journal> {
  const lingerMs = options.lingerMs ?? 1000
  const batchSize = options.batchSize ?? 500
  const file: FileHandle = await open(path, 'a')
  let buffer: string[] = []
  // Flushes run one after another so lines never interleave.
  let writing: Promise<void> = Promise.resolve()
  let closing: Promise<{ flushed: number }> | undefined
  let timer: NodeJS.Timeout | undefined

  function flush(): Promise<void> {
    clearTimeout(timer)
    timer = undefined
    if (buffer.length === 0) return writing
    const lines = buffer.join('')
    buffer = []
    writing = writing.then(() => file.appendFile(lines)).then(() => undefined)
    return writing
  }

  function flushInBackground(): void {
    flush().catch((error: unknown) => console.error('journal: background flush failed', error))
  }

  return {
    append(record) {
      if (closing) throw new Error('journal: append after close()')
      buffer.push(`${JSON.stringify(record)}\n`)
      // Background flushes are the normal path; close() is the one that must not be skipped.
      if (buffer.length >= batchSize) flushInBackground()
      else timer ??= setTimeout(flushInBackground, lingerMs)
    },
    get pending() {
      return buffer.length
    },
    close() {
      closing ??= (async () => {
        const flushed = buffer.length
        await flush()
        await file.sync()
        await file.close()
        return { flushed }
      })()
      return closing
    },
  }
}

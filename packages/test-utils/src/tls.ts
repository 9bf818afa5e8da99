import { readFileSync } from 'node:fs'

/**
 * A self-signed key and certificate for `localhost` / `127.0.0.1`, valid for a century, made for
 * these tests only (never use it to serve anything). Clients pass `ca: cert` to trust it.
 */
export function tlsCredentials(): { key: Buffer; cert: Buffer } {
  return {
    key: readFileSync(new URL('../fixtures/localhost.key', import.meta.url)),
    cert: readFileSync(new URL('../fixtures/localhost.crt', import.meta.url)),
  }
}

import { fileURLToPath } from 'node:url'
import type { HaproxySettings } from './haproxy.ts'
import type { NginxSettings } from './nginx.ts'

/** docs/proxies/, where the copyable configs live. */
export const SAMPLES_DIR = fileURLToPath(new URL('../../docs/proxies/', import.meta.url))

const servers = [
  { name: 'app1', port: 3001 },
  { name: 'app2', port: 3002 },
] as const

/** docs/proxies/haproxy.cfg: what the suite runs (with retries, the safer default), on sample ports. */
export const HAPROXY_SAMPLE: HaproxySettings = {
  listenPort: 8080,
  servers,
  checkIntervalMs: 200,
  fall: 2,
  rise: 2,
  retries: true,
}

/** docs/proxies/nginx.conf: what the suite runs, on sample ports. */
export const NGINX_SAMPLE: NginxSettings = { listenPort: 8080, servers, failTimeoutS: 10 }

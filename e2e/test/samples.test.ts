import { execFile } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { expect, inject, test } from 'vitest'
import { haproxyConfig } from '../src/haproxy.ts'
import { nginxConfig } from '../src/nginx.ts'
import { HAPROXY_SAMPLE, NGINX_SAMPLE, SAMPLES_DIR } from '../src/samples.ts'

// The configs in docs/proxies/ are the ones the suite runs, only with sample ports: regenerate them
// with `E2E_UPDATE_SAMPLES=1 pnpm test:e2e` after changing src/haproxy.ts or src/nginx.ts.
const samples = [
  { file: 'haproxy.cfg', text: haproxyConfig(HAPROXY_SAMPLE) },
  { file: 'nginx.conf', text: nginxConfig(NGINX_SAMPLE) },
]

for (const { file, text } of samples) {
  test(`docs/proxies/${file} is what the suite runs`, () => {
    const path = join(SAMPLES_DIR, file)
    if (process.env.E2E_UPDATE_SAMPLES === '1') writeFileSync(path, text)
    expect(readFileSync(path, 'utf8')).toBe(text)
  })
}

test('docs/proxies/haproxy.cfg is valid for haproxy -c', async ({ skip }) => {
  const haproxy = inject('proxies').haproxy
  if (haproxy.path === undefined) return skip(haproxy.reason)
  const { stdout, stderr } = await promisify(execFile)(haproxy.path, [
    '-c',
    '-f',
    join(SAMPLES_DIR, 'haproxy.cfg'),
  ])
  expect(`${stdout}${stderr}`).toContain('Configuration file is valid')
})

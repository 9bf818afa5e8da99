import { execFile } from 'node:child_process'
import { existsSync, rmSync, writeFileSync } from 'node:fs'
import { promisify } from 'node:util'

const run = promisify(execFile)

/** A proxy binary the suite can run, or why it cannot. */
export type Tool =
  | { readonly path: string; readonly version: string }
  | { readonly path?: undefined; readonly reason: string }

export interface Proxies {
  readonly haproxy: Tool
  readonly nginx: Tool
}

const CANDIDATES = {
  haproxy: ['/usr/sbin/haproxy', '/usr/local/sbin/haproxy', '/usr/bin/haproxy'],
  nginx: ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/bin/nginx'],
} as const

// Debian's maintainer scripts start a service after installing it unless policy-rc.d says no. The
// suite must never start the system services (it runs its own proxies in the foreground), so when
// no policy exists one denying every start is put in place for the install and removed after.
const POLICY = '/usr/sbin/policy-rc.d'

function find(name: keyof typeof CANDIDATES): string | undefined {
  return CANDIDATES[name].find((path) => existsSync(path))
}

async function version(path: string): Promise<string> {
  // nginx prints its version on stderr, HAProxy on stdout.
  const { stdout, stderr } = await run(path, ['-v'], { timeout: 10_000 })
  return `${stdout}${stderr}`.split('\n')[0]?.trim() ?? ''
}

/**
 * Finds haproxy and nginx, installing them from Debian's packages when missing (root only:
 * `apt-get update`, then `apt-get install -y haproxy nginx`). Never throws: a tool that cannot be had
 * comes back with the reason, for the suite to print when it skips.
 */
export async function ensureProxies(log: (line: string) => void): Promise<Proxies> {
  const missing = (['haproxy', 'nginx'] as const).filter((name) => find(name) === undefined)
  let installError: string | undefined
  if (missing.length > 0) {
    installError = await install(missing, log)
  }
  const tool = async (name: keyof typeof CANDIDATES): Promise<Tool> => {
    const path = find(name)
    if (path === undefined)
      return {
        reason: `${name} is not installed and could not be installed: ${installError ?? 'unknown reason'}`,
      }
    try {
      return { path, version: await version(path) }
    } catch (error) {
      return { reason: `${path} does not run: ${(error as Error).message}` }
    }
  }
  return { haproxy: await tool('haproxy'), nginx: await tool('nginx') }
}

async function install(
  packages: readonly string[],
  log: (line: string) => void,
): Promise<string | undefined> {
  if (process.getuid?.() !== 0)
    return `not root (uid ${process.getuid?.()}), so apt-get install ${packages.join(' ')} is not possible`
  if (!existsSync('/usr/bin/apt-get')) return 'apt-get not found (not a Debian-based machine)'
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  const lock = ['-o', 'DPkg::Lock::Timeout=300']
  const addedPolicy = !existsSync(POLICY)
  try {
    if (addedPolicy)
      writeFileSync(
        POLICY,
        '#!/bin/sh\n# Added by the lameduck e2e suite during apt-get install; removed after.\nexit 101\n',
        { mode: 0o755 },
      )
    log(`e2e: installing ${packages.join(' ')} (apt-get update && apt-get install -y ${packages.join(' ')})`)
    await run('apt-get', [...lock, 'update'], { env, timeout: 300_000, maxBuffer: 64 * 1024 * 1024 })
    await run('apt-get', [...lock, 'install', '-y', '--no-install-recommends', ...packages], {
      env,
      timeout: 600_000,
      maxBuffer: 64 * 1024 * 1024,
    })
    log(`e2e: installed ${packages.join(' ')}`)
    return undefined
  } catch (error) {
    const { message, stderr } = error as { message: string; stderr?: string }
    return `${message.split('\n')[0]}${stderr ? `: ${stderr.trim().split('\n').slice(-3).join(' | ')}` : ''}`
  } finally {
    if (addedPolicy) rmSync(POLICY, { force: true })
  }
}

import net from 'node:net'

// Below Linux's ephemeral range (32768–60999 by default): a port picked here cannot be taken by some
// other test's outgoing connection while an instance is down between its exit and its replacement.
const LOW = 20_000
const HIGH = 32_000

function tryBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer()
    server.once('error', () => resolve(false))
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => server.close(() => resolve(true)))
  })
}

/** `count` distinct loopback ports that were free a moment ago (other engineers share this machine). */
export async function freePorts(count: number): Promise<number[]> {
  const ports: number[] = []
  for (let attempt = 0; ports.length < count; attempt++) {
    if (attempt > 200) throw new Error(`no ${count} free loopback ports found between ${LOW} and ${HIGH}`)
    const port = LOW + Math.floor(Math.random() * (HIGH - LOW))
    if (!ports.includes(port) && (await tryBind(port))) ports.push(port)
  }
  return ports
}

/**
 * Resolves once something accepts connections on `port` (a proxy we just started, which has no
 * "ready" line of its own): retries a connection every 20 ms, fails after `ms`, or as soon as
 * `failed()` tells the process has died.
 */
export async function waitForListening(
  port: number,
  ms: number,
  what: string,
  failed: () => string | undefined,
): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    const reason = failed()
    if (reason !== undefined) throw new Error(`${what} did not start: ${reason}`)
    if (await canConnect(port)) return
    if (Date.now() > deadline)
      throw new Error(`timed out after ${ms} ms waiting for ${what} to listen on 127.0.0.1:${port}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.end()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

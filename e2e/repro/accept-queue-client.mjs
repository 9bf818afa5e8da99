// SIGTERM reaches the server in the same event-loop turn as a request whose handler then holds the
// loop for 300 ms; meanwhile a new connection is opened (the kernel completes it: the listener is
// still open) and a request is sent on it. Graceful: that request is answered. The bug: the listener
// is closed with the connection still in its accept queue, and the kernel resets it.
import { spawn } from 'node:child_process'
import net from 'node:net'
import { fileURLToPath } from 'node:url'

const script = fileURLToPath(new URL('./accept-queue-server.mjs', import.meta.url))
const child = spawn(process.execPath, [script, ...process.argv.slice(2)], {
  stdio: ['ignore', 'pipe', 'inherit'],
})
let out = ''
child.stdout.on('data', (chunk) => {
  out += chunk
})
const waitFor = (text) =>
  new Promise((resolve) => {
    const check = () => (out.includes(text) ? resolve() : child.stdout.once('data', check))
    check()
  })
await waitFor('ready ')
const port = Number(/ready (\d+)/.exec(out)[1])
const open = () =>
  new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => resolve(socket))
  })
const c0 = await open()
const c1 = await open()
c0.write('GET /busy0 HTTP/1.1\r\nHost: x\r\n\r\n')
await waitFor('busy /busy0')
c1.write('GET /busy1 HTTP/1.1\r\nHost: x\r\n\r\n') // read in the same loop turn as the signal
child.kill('SIGTERM')
await waitFor('busy /busy1')
const c2 = net.connect(port, '127.0.0.1')
let received = ''
c2.on('data', (chunk) => {
  received += chunk
})
c2.on('connect', () => c2.write('GET /late HTTP/1.1\r\nHost: x\r\n\r\n'))
const outcome = await new Promise((resolve) => {
  c2.once('error', (error) => resolve(`error ${error.code} (bug)`))
  c2.once('close', () => resolve(`answered: ${JSON.stringify(received.split('\r\n')[0])}`))
})
console.log(`request on a connection opened while the signal was pending: ${outcome}`)
c0.destroy()
c1.destroy()
await new Promise((resolve) => child.once('exit', resolve))

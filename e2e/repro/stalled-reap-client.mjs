// An idle keep-alive connection; SIGTERM; while the server's loop is stalled right after stopping
// began, the client reuses the connection. Graceful: the request is served with `Connection: close`.
// The bug: the idle reaper fires before the request is read and the socket is closed under it (RST).
import { spawn } from 'node:child_process'
import net from 'node:net'
import { fileURLToPath } from 'node:url'

const script = fileURLToPath(new URL('./stalled-reap-server.mjs', import.meta.url))
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
const socket = net.connect(port, '127.0.0.1')
let received = ''
socket.on('data', (chunk) => {
  received += chunk
})
const answered = (text) =>
  new Promise((resolve) => {
    const check = () => (received.includes(text) ? resolve() : socket.once('data', check))
    check()
  })
socket.write('GET /first HTTP/1.1\r\nHost: x\r\n\r\n')
await answered('ok /first')
await new Promise((resolve) => setTimeout(resolve, 100)) // idle connection, quiet server
received = ''
child.kill('SIGTERM')
await waitFor('stalling')
socket.write('GET /second HTTP/1.1\r\nHost: x\r\n\r\n') // lands in the server's receive buffer
const outcome = await new Promise((resolve) => {
  socket.once('error', (error) => resolve(`error ${error.code} (bug)`))
  socket.once('close', () => resolve(`answered: ${JSON.stringify(received.split('\r\n')[0])}`))
})
console.log(`request on the idle keep-alive connection during the stall: ${outcome}`)
await new Promise((resolve) => child.once('exit', resolve))

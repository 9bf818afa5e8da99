// An idle keep-alive connection on a server that has been quiet for 100 ms; SIGTERM; the client
// reuses the connection while the server's loop is stalled inside the poll phase that precedes the
// idle reaper's check phase. Graceful: the request is served with `Connection: close`. The bug: the
// reaper, judging the server quiet by the clock, closes the socket with the request unread (FIN
// without an answer, nginx's "upstream prematurely closed connection"; or RST).
import { spawn } from 'node:child_process'
import net from 'node:net'
import { fileURLToPath } from 'node:url'

const script = fileURLToPath(new URL('./stalled-poll-server.mjs', import.meta.url))
const child = spawn(process.execPath, [script, ...process.argv.slice(2)], {
  stdio: ['ignore', 'pipe', 'inherit'],
})
let out = ''
child.stdout.on('data', (chunk) => {
  out += chunk
})
const printed = (text) =>
  new Promise((resolve) => {
    const check = () => (out.includes(text) ? resolve() : child.stdout.once('data', check))
    check()
  })
await printed('ready ')
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
await printed('stalling')
socket.write('GET /second HTTP/1.1\r\nHost: x\r\n\r\n') // lands in the server's receive buffer
const outcome = await new Promise((resolve) => {
  setTimeout(() => resolve('no outcome within 5000 ms'), 5_000).unref()
  socket.once('error', (error) => resolve(`error ${error.code} (bug)`))
  socket.once('close', () =>
    resolve(
      received === ''
        ? 'closed without an answer (bug)'
        : `answered: ${JSON.stringify(received.split('\r\n')[0])}`,
    ),
  )
})
console.log(`request on the idle keep-alive connection during a stall in the poll phase: ${outcome}`)
socket.destroy()
if (child.exitCode === null && child.signalCode === null) {
  const exited = new Promise((resolve) => child.once('exit', resolve))
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000)
  await exited
  clearTimeout(timer)
}

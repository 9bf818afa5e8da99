import net from 'node:net'

/** Opens (and at once closes) a TCP connection to 127.0.0.1:`port`: `'connected'`, or the error's code (`'ECONNREFUSED'`). */
export function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.destroy()
      resolve('connected')
    })
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'))
  })
}

import net from 'node:net'

/** Opens a TCP connection to 127.0.0.1:`port`: `'connected'` (closed again at once) or the error code, e.g. `'ECONNREFUSED'`. */
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

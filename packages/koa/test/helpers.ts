import net from 'node:net'

/** Opens a TCP connection to 127.0.0.1:`port` and closes it: `'connected'`, or the error code (`'ECONNREFUSED'`). */
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

/** A raw HTTP/1.1 exchange with its `Date` header line taken out (the one part that may differ between two answers). */
export function withoutDate(data: string): string {
  return data.replace(/\r\nDate: [^\r]*/, '')
}

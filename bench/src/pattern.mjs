// The byte pattern every test body carries, so the client can tell a full body from a truncated or
// reordered one without the server sending a checksum.

const cache = new Map()

/** The byte at absolute position `index` of every pattern body. */
export function byteAt(index) {
  return (index * 31 + (index >>> 8) + 7) & 0xff
}

/** `size` bytes of the pattern starting at absolute position `offset`. */
export function pattern(size, offset = 0) {
  const key = `${size}:${offset}`
  const cached = cache.get(key)
  if (cached) return cached
  const buffer = Buffer.allocUnsafe(size)
  for (let i = 0; i < size; i++) buffer[i] = byteAt(offset + i)
  if (cache.size < 256) cache.set(key, buffer)
  return buffer
}

/** True when `body` is exactly `size` bytes of the pattern from position 0. */
export function isPattern(body, size) {
  if (body.length !== size) return false
  for (let i = 0; i < size; i++) if (body[i] !== byteAt(i)) return false
  return true
}

/** A raw HTTP/1.1 exchange with its `Date` header line taken out (the one part that may differ between two answers). */
export function withoutDate(data: string): string {
  return data.replace(/\r\nDate: [^\r]*/, '')
}

// Reference ceiling for `bench webhooks`: the HTTP half of delivering, with no database. Signs `count` copies
// of a real delivery body as the server does (src/webhooks/signing.ts) and POSTs them over the given URLs in
// turn, `concurrency` in flight, with fetch as the server's sender uses it. Config: JSON in BENCH_SENDER.
// Prints {"type":"done","sent","errors","seconds"} when every answer is in, then waits to be stopped (its CPU
// time is read from /proc until then).
import { signedHeaders } from '../../src/webhooks/signing'

const o = JSON.parse(process.env.BENCH_SENDER!) as { urls: string[]; count: number; concurrency: number; payload: string; secret: string }

let next = 0
let errors = 0
const started = performance.now()
async function lane() {
  while (next < o.count) {
    const i = next++
    try {
      const response = await fetch(o.urls[i % o.urls.length]!, {
        method: 'POST',
        headers: signedHeaders(o.secret, `msg_${i}`, o.payload),
        body: o.payload,
        redirect: 'manual',
        signal: AbortSignal.timeout(10_000),
      })
      await response.arrayBuffer()
      if (!response.ok) errors++
    } catch {
      errors++
    }
  }
}
await Promise.all(Array.from({ length: o.concurrency }, lane))
process.stdout.write(`${JSON.stringify({ type: 'done', sent: o.count, errors, seconds: (performance.now() - started) / 1000 })}\n`)
setInterval(() => {}, 60_000)

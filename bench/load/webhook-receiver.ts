// The webhook receiver of `bench webhooks`: POST /fast/<name> answers 200 at once, POST /slow/<name> after
// BENCH_SLOW_MS. For each delivery it records, per name, the delay from the event (the body's `timestamp`:
// the database's clock, on this same machine) to its arrival, and counts arrivals and repeated Webhook-Ids.
// GET /health for startServer; GET /report gives the figures so far; POST /reset starts them again.
import { Histogram, now } from '../histogram'

const SLOW_MS = Number(process.env.BENCH_SLOW_MS ?? 10_000)

interface Stats {
  received: number
  repeated: number
  delayMs: Histogram
  inFlight: number
  maxInFlight: number
}

const byName = new Map<string, Stats>()
const seen = new Set<string>()
const stats = (name: string) => {
  let s = byName.get(name)
  if (!s) byName.set(name, (s = { received: 0, repeated: 0, delayMs: new Histogram(), inFlight: 0, maxInFlight: 0 }))
  return s
}

Bun.serve({
  port: Number(process.env.PORT ?? 0),
  hostname: '127.0.0.1',
  development: false,
  idleTimeout: 60,
  async fetch(request) {
    const path = new URL(request.url).pathname
    if (request.method === 'GET' && path === '/health') return new Response('ok')
    if (request.method === 'GET' && path === '/report') {
      const out: Record<string, object> = {}
      for (const [name, s] of byName) out[name] = { ...s, delayMs: s.delayMs.toJSON() }
      return Response.json(out)
    }
    if (request.method === 'POST' && path === '/reset') {
      for (const s of byName.values()) {
        s.received = s.repeated = s.maxInFlight = 0
        s.delayMs.reset()
      }
      return new Response('ok')
    }
    const match = /^\/(fast|slow)\/([\w-]+)$/.exec(path)
    if (request.method !== 'POST' || !match) return new Response('not found', { status: 404 })
    const body = await request.text()
    const arrived = now()
    const s = stats(match[2]!)
    s.received++
    const id = request.headers.get('webhook-id') ?? ''
    if (seen.has(id)) s.repeated++
    else seen.add(id)
    const at = Date.parse(/"timestamp":"([^"]+)"/.exec(body)?.[1] ?? '')
    if (Number.isFinite(at)) s.delayMs.record(Math.max(0, arrived - at))
    if (match[1] === 'fast') return new Response('ok')
    s.inFlight++
    s.maxInFlight = Math.max(s.maxInFlight, s.inFlight)
    // Until the answer, or until the sender gives up (its timeout): then the slot is the sender's again.
    await Promise.race([Bun.sleep(SLOW_MS), new Promise((resolve) => request.signal.addEventListener('abort', resolve, { once: true }))])
    s.inFlight--
    return new Response('late')
  },
})

// Fault: 500 SSE readers that never read (raw TCP sockets, paused after the request) on a process whose every
// update is large, while a normal EventSource follows the same process. The server's memory stays bounded
// (each stuck stream holds at most the newest state, never a queue) and the fast reader is not held back.
import { describe, expect } from 'bun:test'
import { connect, type Socket } from 'node:net'
import { readFileSync } from 'node:fs'
import { hasPostgres, seededDatabase, spawnServer, waitFor } from '../support/helpers'
import { TestWorker } from '../support/worker-client'
import { openStream, versionsIncrease } from '../support/sse-client'
import { Traffic } from './clients'
import { reportAfterAll, scenario, skipped } from './report'

const SLOW_READERS = 500
const UPDATES = 150
const METADATA_BYTES = 60 * 1024 // under METADATA_MAX_BYTES (64 KiB)
// Each stuck loopback socket absorbs about 3 MB in kernel buffers (send and receive queues, not RSS; 1.5 GB
// for all 500, measured with `ss`) before the server feels backpressure: about 50 of these updates.
// Buffering the other 100 would grow RSS by 100 × 500 × 64 KiB ≈ 3.2 GB; conflation keeps one unsent state
// per stream (shared, not copied) and the socket layer a frame or two: 2 × 500 × 64 KiB + 64 MB of slack.
const RSS_GROWTH_BOUND_MB = 128
// "Not held back" is asserted as a condition, not a latency: each update reaches the fast reader while all 500
// slow streams are stuck and still open, before the next update is sent. A fan-out that waited on the slow
// sockets would never deliver it (the deadline is only there to end a failing run; on a loaded 2-core machine
// a 1 s latency bound failed at 1161 and 1404 ms without anything being wrong). The delays are reported.
const DELIVERY_DEADLINE_MS = 30_000
const row = {
  n: 6,
  scenario: 'Slow readers',
  injected: `${SLOW_READERS} SSE streams on raw TCP sockets that never read; ${UPDATES} updates of a ${METADATA_BYTES / 1024} KiB process`,
  invariant: `server RSS grows < ${RSS_GROWTH_BOUND_MB} MB; a normal EventSource gets every update while the ${SLOW_READERS} slow streams stay stuck`,
}
reportAfterAll([6])
if (!hasPostgres) skipped(row, 'needs DATABASE_URL (the server runs as its own process, for its RSS)')

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024

describe.skipIf(!hasPostgres)('slow readers', async () => {
  if (!hasPostgres) return
  const { url, tenant, wtoken } = await seededDatabase()
  // 500 streams of one token on purpose: the per-token stream cap(default 100) is lifted for this fault.
  const server = await spawnServer({
    DATABASE_URL: url,
    REDIS_URL: '',
    PROGRESS_PERSIST_MS: '10',
    SSE_MAX_MS: '120000',
    LOG_LEVEL: 'error',
    MAX_STREAMS_PER_TOKEN: '0',
  })
  const traffic = new Traffic()

  scenario(row, async () => {
    const metadata = { blob: 'x'.repeat(METADATA_BYTES) }
    const p = (await traffic.json(`${server.url}/processes`, { method: 'POST', token: tenant.token, body: JSON.stringify({ type: 'slow_readers', metadata }) }))
      .body
    const worker = await TestWorker.connect(server.url, wtoken)
    const run = (await worker.request({ op: 'claim', types: ['slow_readers'] })).process

    // The slow readers: a request, then nothing read ever again.
    const sockets: Socket[] = []
    let responded = 0
    await Promise.all(
      Array.from(
        { length: SLOW_READERS },
        () =>
          new Promise<void>((resolve, reject) => {
            const socket = connect(server.port, '127.0.0.1', () => {
              socket.write(
                `GET /processes/${p.id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${tenant.token}\r\nAccept: text/event-stream\r\n\r\n`,
              )
              // Read just enough to see the response start, then stop reading for good.
              socket.once('data', (chunk) => {
                if (chunk.toString().startsWith('HTTP/1.1 200')) responded++
                socket.pause()
                resolve()
              })
            })
            socket.on('error', reject)
            sockets.push(socket)
          }),
      ),
    )
    expect(responded).toBe(SLOW_READERS)
    const fast = openStream(`${server.url}/processes/${p.id}/stream`, tenant.token, { onResponse: traffic.record })
    await waitFor(() => fast.messages.length >= 1, DELIVERY_DEADLINE_MS, 'the fast reader to connect')
    const metrics = await (await fetch(server.metricsUrl!)).text()
    expect(Number(/^processes_sse_streams_open (\d+)/m.exec(metrics)?.[1])).toBe(SLOW_READERS + 1)
    Bun.gc(true)
    await Bun.sleep(500)
    const before = rssMb(server.proc.pid)

    // Large updates, one at a time: each acked (committed and published), then seen by the fast reader, before
    // the next. The slow sockets fill after about 50 of them; from then on their streams conflate.
    const ackedAt = new Map<number, number>()
    let peak = before
    for (let n = 1; n <= UPDATES; n++) {
      const reply = await worker.request({ op: 'progress', process_id: p.id, progress: n % 100, message: `update ${n}`, attempt: run.attempts })
      expect(reply.op).toBe('ack')
      ackedAt.set(reply.version, Date.now())
      await waitFor(
        () => fast.messages.some((m) => m.data.version === reply.version),
        DELIVERY_DEADLINE_MS,
        () => `the fast reader to get update ${n} (version ${reply.version})`,
      )
      if (n % 20 === 0) peak = Math.max(peak, rssMb(server.proc.pid))
    }
    // The slow streams were stuck throughout and are still open: the fast reader was served beside them.
    const during = await (await fetch(server.metricsUrl!)).text()
    expect(Number(/^processes_sse_streams_open (\d+)/m.exec(during)?.[1])).toBe(SLOW_READERS + 1)
    await Bun.sleep(500)
    const after = rssMb(server.proc.pid)
    peak = Math.max(peak, after)

    // The fast reader got every update (none conflated away: it kept up) and each promptly.
    const received = new Map(fast.messages.map((m) => [m.data.version as number, m.at]))
    const missing = [...ackedAt.keys()].filter((v) => !received.has(v))
    expect(missing).toEqual([])
    const delays = [...ackedAt].map(([v, at]) => received.get(v)! - at).sort((x, y) => x - y)
    const p99 = delays[Math.floor(delays.length * 0.99)]!
    expect(versionsIncrease(fast)).toBe(true)
    // Bounded memory while 500 streams are stuck.
    const growth = peak - before
    expect(growth).toBeLessThan(RSS_GROWTH_BOUND_MB)
    // The server is fine: it answers, and finishing the process ends the fast stream with done.
    expect((await worker.request({ op: 'complete', process_id: p.id, attempt: run.attempts })).op).toBe('ack')
    await waitFor(() => fast.done.length === 1, DELIVERY_DEADLINE_MS, 'done on the fast reader')
    expect(traffic.serverErrors).toEqual([])
    for (const socket of sockets) socket.destroy()
    worker.close()
    return `RSS ${before.toFixed(0)} → peak ${peak.toFixed(0)} MB (+${growth.toFixed(0)} MB); fast reader p99 ${p99} ms, max ${delays.at(-1)} ms`
  })
})

// bench realtime: three figures in one run.
// (a) 10,000 concurrent streams on one instance with reconnect churn every 25 s (SSE_MAX_MS default; each
//     ended stream re-opens at once, on a new connection, with Last-Event-ID), a worker broadcasting on the
//     100 processes they watch every 500 ms: failed connects, server RSS (goal < 1 GiB), latency under churn;
// (b) publish-to-receive latency at 1,000 watched processes: one stream on each, a worker sending `progress`
//     on every one of them every 500 ms (2,000 frames/s), p50 / p99 (goal p99 ≤ 50 ms), beside the trivial Bun
//     SSE server with the same clients and worker;
// (c) ingest, as `bench ingest`: frames per second with coalescing on and the Postgres writes it costs.
import { ingestInto } from './ingest'
import { BASE_REDIS_URL, Report, cleanRedisPrefix, redisPrefix } from './lib'
import { realSetup, runStreams, startStreamServer, startTrivialSseServer, summarize } from './scenario'

const env = process.env
const STREAMS = Number(env.BENCH_REALTIME_STREAMS ?? 10_000)
const CHURN_WATCHED = 100
const LATENCY_WATCHED = Number(env.BENCH_REALTIME_WATCHED ?? 1000)
const WINDOW_MS = 25_000
const BROADCAST_MS = 500
const MEASURE_MS = Number(env.BENCH_REALTIME_MEASURE_MS ?? 30_000)
const LATENCY_MEASURE_MS = Number(env.BENCH_MEASURE_MS ?? 10_000)
const MAX_RSS_BYTES = 2 ** 30
const MAX_P99_MS = 50

export async function run(): Promise<Report> {
  const report = new Report('realtime', {
    streams: STREAMS,
    sse_max_ms: WINDOW_MS,
    broadcast_ms: BROADCAST_MS,
    churn_measure_ms: MEASURE_MS,
    latency_watched_processes: LATENCY_WATCHED,
    latency_measure_ms: LATENCY_MEASURE_MS,
  })

  // (a) capacity with churn.
  const churnSetup = await realSetup(CHURN_WATCHED)
  const prefix = redisPrefix()
  cleanRedisPrefix(BASE_REDIS_URL, prefix)
  const server = await startStreamServer('server (realtime a)', churnSetup, { REDIS_URL: BASE_REDIS_URL, REDIS_PREFIX: prefix, SSE_MAX_MS: String(WINDOW_MS) })
  const r = await runStreams({
    label: `realtime, ${STREAMS} streams`,
    streamServer: server,
    token: churnSetup.tenant.token,
    workerToken: churnSetup.tenant.workerToken,
    workerId: churnSetup.workerId,
    ids: churnSetup.ids,
    streams: STREAMS,
    // Opens spread over one window, so the reconnects are spread too (STREAMS / 25 s).
    rampPerSec: (STREAMS * 1000) / WINDOW_MS,
    reconnect: true,
    broadcastMs: BROADCAST_MS,
    warmupMs: 5000,
    measureMs: MEASURE_MS,
  })
  await server.stop()
  const c = r.counters
  const failed = c.failures! + c.dropped!
  // Under churn a few streams are between two windows at any instant (≈ reconnects/s × connect time).
  report.add({
    figure: '(a) streams held (open at the end)',
    value: c.open!,
    unit: '',
    goal: `≥ 99.5% of ${STREAMS.toLocaleString('en-US')}`,
    pass: c.open! >= STREAMS * 0.995,
  })
  report.add({ figure: '(a) reconnects per second', value: c.windowsEnded! / r.measureS, unit: '/s' })
  report.add({ figure: '(a) failed connects (+ dropped)', value: failed, unit: '', goal: '= 0', pass: failed === 0 })
  report.add({ figure: '(a) server RSS (max)', value: r.rssMaxBytes / 2 ** 20, unit: 'MiB', goal: '< 1 GiB', pass: r.rssMaxBytes < MAX_RSS_BYTES })
  report.add({ figure: '(a) server RSS per stream', value: r.rssPerStreamBytes / 1024, unit: 'KiB' })
  report.add({ figure: '(a) server CPU', value: (r.cpuSeconds / r.measureS) * 100, unit: '% of a core' })
  report.add({ figure: '(a) server event-loop lag, max sampled', value: r.eventLoopLagMaxMs ?? NaN, unit: 'ms' })
  report.add({ figure: '(a) connect → response head p99', value: r.connect.quantile(0.99), unit: 'ms' })
  report.add({ figure: `(a) latency p50 under churn (${CHURN_WATCHED} processes)`, value: r.latency.quantile(0.5), unit: 'ms' })
  report.add({ figure: `(a) latency p99 under churn`, value: r.latency.quantile(0.99), unit: 'ms' })
  report.data.a_churn = summarize(r)
  if (r.failureSamples.length > 0) report.note(`(a) failures, first few: ${r.failureSamples.join(' | ')}`)

  // (b) latency at 1,000 watched processes, one stream each.
  const latencySetup = await realSetup(LATENCY_WATCHED)
  const prefixB = redisPrefix()
  cleanRedisPrefix(BASE_REDIS_URL, prefixB)
  const latencyServer = await startStreamServer('server (realtime b)', latencySetup, {
    REDIS_URL: BASE_REDIS_URL,
    REDIS_PREFIX: prefixB,
    SSE_MAX_MS: '3600000',
  })
  const common = {
    token: latencySetup.tenant.token,
    ids: latencySetup.ids,
    streams: LATENCY_WATCHED,
    rampPerSec: 2000,
    reconnect: false,
    broadcastMs: BROADCAST_MS,
    // 1,000 independent workers do not report in lockstep: each process every 500 ms, the frames spread evenly
    // (a steady 2,000 frames/s). All at once, the figure is the time to get through a 1,000-frame burst.
    spread: true,
    warmupMs: 3000,
    measureMs: LATENCY_MEASURE_MS,
  }
  const b = await runStreams({
    label: 'latency',
    streamServer: latencyServer,
    workerToken: latencySetup.tenant.workerToken,
    workerId: latencySetup.workerId,
    ...common,
  })
  await latencyServer.stop()
  const trivialServer = await startTrivialSseServer()
  const bt = await runStreams({ label: 'latency, trivial', streamServer: trivialServer, workerToken: '', ...common })
  await trivialServer.stop()
  const [p50, p99, t50, t99] = [b.latency.quantile(0.5), b.latency.quantile(0.99), bt.latency.quantile(0.5), bt.latency.quantile(0.99)]
  report.add({ figure: `(b) latency p50, ${LATENCY_WATCHED} processes`, value: p50, unit: 'ms', ceiling: t50, ceilingLabel: 'trivial', ratio: p50 / t50 })
  report.add({
    figure: `(b) latency p99, ${LATENCY_WATCHED} processes`,
    value: p99,
    unit: 'ms',
    ceiling: t99,
    ceilingLabel: 'trivial',
    ratio: p99 / t99,
    goal: `≤ ${MAX_P99_MS} ms`,
    pass: p99 <= MAX_P99_MS,
  })
  if (b.worker)
    report.add({
      figure: '(b) worker frame → ack p50 (after commit)',
      value: b.worker.ack.quantile(0.5),
      unit: 'ms',
      ceiling: bt.worker?.ack.quantile(0.5),
      ceilingLabel: 'trivial',
    })
  report.add({
    figure: '(b) events delivered / expected',
    value: b.deliveryRatio ?? NaN,
    unit: '',
    goal: '≈ 1 (no loss)',
    pass: (b.deliveryRatio ?? 0) >= 0.97 && b.counters.failures === 0,
  })
  report.data.b_latency = { server: summarize(b), trivial: summarize(bt) }

  // (c)
  await ingestInto(report, '(c)')
  report.note('(a) each stream that the server ends at 25 s re-opens at once on a new TCP connection with Last-Event-ID')
  report.note(
    `(b) ${LATENCY_WATCHED} streams, one per process, each process reporting every ${BROADCAST_MS} ms with the frames spread evenly over the period; latency = worker frame sent → event parsed by the stream client (WebSocket → coalesced write → commit → hub → SSE)`,
  )
  return report
}

// bench fanout: N EventSource-style streams on one instance, a worker broadcasting `progress` on the watched
// processes every 500 ms; worker-frame-to-receipt latency p50/p99, server RSS per stream and CPU. Ceiling: a
// trivial Bun.serve SSE broadcast server, same clients, same worker, same run.
//
// Streams watch WATCHED processes (default 100), so at N = 15,000 each process has 150 streams and each
// broadcast is 100 worker frames → 100 coalesced progress writes → 15,000 SSE events.
import { Report, cleanRedisPrefix, BASE_REDIS_URL, redisPrefix } from './lib'
import { type StreamsResult, realSetup, runStreams, startStreamServer, startTrivialSseServer, summarize } from './scenario'

const env = process.env
export const FANOUT_SIZES = (env.BENCH_FANOUT_N ?? '5000,15000').split(',').map(Number)
const WATCHED = Number(env.BENCH_FANOUT_WATCHED ?? 100)
const BROADCAST_MS = 500
const WARMUP_MS = Number(env.BENCH_WARMUP_MS ?? 3000)
const MEASURE_MS = Number(env.BENCH_MEASURE_MS ?? 10_000)
/** Goal: memory per stream (a trivial Bun stream costs about 6 KB here). */
const MAX_KIB_PER_STREAM = 15
const MAX_P99_RATIO = 1.5

export async function run(): Promise<Report> {
  const report = new Report('fanout', { streams: FANOUT_SIZES, watched_processes: WATCHED, broadcast_ms: BROADCAST_MS, measure_ms: MEASURE_MS })
  const setup = await realSetup(WATCHED)
  for (const n of FANOUT_SIZES) {
    const prefix = redisPrefix()
    cleanRedisPrefix(BASE_REDIS_URL, prefix)
    const server = await startStreamServer(`server (N=${n})`, setup, { REDIS_URL: BASE_REDIS_URL, REDIS_PREFIX: prefix, SSE_MAX_MS: '3600000' })
    const real = await runStreams({
      label: `processes server, N=${n}`,
      streamServer: server,
      token: setup.tenant.token,
      workerToken: setup.tenant.workerToken,
      workerId: setup.workerId,
      ids: setup.ids,
      streams: n,
      rampPerSec: 3000,
      reconnect: false,
      broadcastMs: BROADCAST_MS,
      warmupMs: WARMUP_MS,
      measureMs: MEASURE_MS,
    })
    await server.stop()

    const trivialServer = await startTrivialSseServer()
    const trivial = await runStreams({
      label: `trivial Bun SSE, N=${n}`,
      streamServer: trivialServer,
      token: setup.tenant.token,
      workerToken: '',
      ids: setup.ids,
      streams: n,
      rampPerSec: 3000,
      reconnect: false,
      broadcastMs: BROADCAST_MS,
      warmupMs: WARMUP_MS,
      measureMs: MEASURE_MS,
    })
    await trivialServer.stop()

    addFanoutRows(report, `N=${n}`, real, trivial)
    report.data[`n_${n}`] = { server: summarize(real), trivial: summarize(trivial) }
  }
  report.note(
    'latency: worker frame sent (its message carries the send time) → event parsed by the stream client; real server path = WebSocket → coalesced UPDATE … RETURNING → hub → SSE',
  )
  report.note('RSS per stream: (max RSS while measuring − RSS before any stream) / N; KiB = 1024 bytes')
  report.note('server runs with REDIS_URL set (its own prefix), as deployed; SSE_MAX_MS=3600000 so no stream ends during the run')
  return report
}

export function addFanoutRows(report: Report, tag: string, real: StreamsResult, trivial: StreamsResult) {
  const p50 = real.latency.quantile(0.5)
  const p99 = real.latency.quantile(0.99)
  const t50 = trivial.latency.quantile(0.5)
  const t99 = trivial.latency.quantile(0.99)
  const kib = real.rssPerStreamBytes / 1024
  const tkib = trivial.rssPerStreamBytes / 1024
  report.add({ figure: `${tag} latency p50`, value: p50, unit: 'ms', ceiling: t50, ceilingLabel: 'trivial', ratio: p50 / t50 })
  report.add({
    figure: `${tag} latency p99`,
    value: p99,
    unit: 'ms',
    ceiling: t99,
    ceilingLabel: 'trivial',
    ratio: p99 / t99,
    goal: `≤ ${MAX_P99_RATIO}× trivial`,
    pass: p99 <= MAX_P99_RATIO * t99,
  })
  report.add({
    figure: `${tag} RSS per stream`,
    value: kib,
    unit: 'KiB',
    ceiling: tkib,
    ceilingLabel: 'trivial',
    ratio: kib / tkib,
    goal: `≤ ${MAX_KIB_PER_STREAM} KiB`,
    pass: kib <= MAX_KIB_PER_STREAM,
  })
  report.add({
    figure: `${tag} server RSS (max)`,
    value: real.rssMaxBytes / 2 ** 20,
    unit: 'MiB',
    ceiling: trivial.rssMaxBytes / 2 ** 20,
    ceilingLabel: 'trivial',
    ratio: real.rssMaxBytes / trivial.rssMaxBytes,
  })
  report.add({
    figure: `${tag} server CPU (${real.measureS.toFixed(0)} s window)`,
    value: real.cpuSeconds,
    unit: 'CPU-s',
    ceiling: trivial.cpuSeconds,
    ceilingLabel: 'trivial',
    ratio: real.cpuSeconds / trivial.cpuSeconds,
  })
  if (real.deliveryRatio !== null) {
    report.add({
      figure: `${tag} events delivered / expected`,
      value: real.deliveryRatio,
      unit: '',
      goal: '≈ 1 (no loss)',
      pass: real.deliveryRatio >= 0.97 && real.counters.failures === 0,
    })
  }
}

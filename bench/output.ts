// bench output: live output on one instance. BENCH_OUTPUT_STREAMS running processes (default 1,000), one
// stream on each, worker processes sending `output` chunks as fast as the acks come back (a window of unacked
// frames each), every chunk stamped with its send time so the stream clients measure worker-send →
// browser-receive. Figures: chunks/s accepted (acked) and delivered (received by the streams), that
// latency's p50/p99, and the Postgres output statements per 10 ms (the write-behind's one statement per
// OUTPUT_FLUSH_MS tick, for every process), with the chunks written per statement. The ceiling, in the same
// run with the same clients and workers: a bare Bun SSE write loop (bench/ceilings/sse-broadcast-server.ts) that
// acks each `output` frame and writes it to its stream at once — no auth, database, hub or write-behind.
import { Histogram } from './histogram'
import { BUN, BENCH_DIR, type Child, Report, createBenchTenant, freshDatabase, insertRunning, procStat, scrapeMetrics, sleep, spawnChild } from './lib'
import { STREAMS_PER_CLIENT, startStreamServer, startTrivialSseServer } from './scenario'

const env = process.env
const STREAMS = Number(env.BENCH_OUTPUT_STREAMS ?? 1000)
const WORKERS = Number(env.BENCH_OUTPUT_WORKERS ?? 4)
const WINDOW = Number(env.BENCH_OUTPUT_WINDOW ?? 256)
const FLUSH_MS = 10
const WARMUP_MS = Number(env.BENCH_WARMUP_MS ?? 3000)
const MEASURE_MS = Number(env.BENCH_MEASURE_MS ?? 10_000)
const workerIdOf = (k: number) => `bench-output-${k}`

interface Target {
  url: string
  port: number
  pid: number
  /** The real server's metrics port's /metrics (the bare loop has none). */
  metricsUrl?: string
}

/** One run of the load against a server: the real one (its metrics read too) or the bare ceiling. */
async function drive(label: string, server: Target, o: { token: string; workerToken: string; ids: number[]; real: boolean }) {
  const clients: Child[] = []
  const clientCount = Math.max(1, Math.ceil(STREAMS / STREAMS_PER_CLIENT))
  let offset = 0
  for (let c = 0; c < clientCount; c++) {
    const count = Math.floor(STREAMS / clientCount) + (c < STREAMS % clientCount ? 1 : 0)
    clients.push(
      spawnChild(`${label}: streams ${c + 1}/${clientCount}`, [BUN, `${BENCH_DIR}load/sse-clients.ts`], {
        BENCH_CLIENT: JSON.stringify({
          host: '127.0.0.1',
          port: server.port,
          token: o.token,
          paths: o.ids.map((id) => `/processes/${id}/stream`),
          count,
          offset,
          rampPerSec: Math.max(1, Math.round(4000 / clientCount)),
          reconnect: false,
          statusEveryMs: 500,
        }),
      }),
    )
    offset += count
  }
  const status = (c: Child) => c.messages.findLast((m) => m.type === 'status') ?? { ready: 0 }
  const deadline = Date.now() + 120_000
  while (clients.reduce((n, c) => n + status(c).ready, 0) < STREAMS) {
    if (Date.now() > deadline) throw new Error(`${label}: streams not ready`)
    await sleep(200)
  }
  const workers: Child[] = []
  for (let k = 0; k < WORKERS; k++) {
    workers.push(
      spawnChild(`${label}: worker ${k + 1}`, [BUN, `${BENCH_DIR}load/worker-load.ts`], {
        BENCH_WORKER: JSON.stringify({
          url: server.url,
          token: o.workerToken,
          workerId: workerIdOf(k),
          mode: 'ingest',
          op: 'output',
          stamp: true,
          ids: o.ids.filter((_, i) => i % WORKERS === k),
          intervalMs: 0,
          window: WINDOW,
          attempt: 1,
        }),
      }),
    )
  }
  await Promise.all(workers.map((w) => w.nextMessage((m) => m.type === 'ready', 30_000)))
  for (const w of workers) w.send('start')
  await sleep(WARMUP_MS)
  const all = [...clients, ...workers]
  for (const c of all) c.send('reset')
  await Promise.all(all.map((c) => c.nextMessage((m) => m.type === 'reset-ok')))
  const before = o.real ? await scrapeMetrics(server.metricsUrl!) : null
  const cpu0 = procStat(server.pid).cpuSeconds
  const t0 = performance.now()
  await sleep(MEASURE_MS)
  for (const c of all) c.send('report')
  const reports = await Promise.all(clients.map((c) => c.nextMessage((m) => m.type === 'report')))
  const workerReports = await Promise.all(workers.map((w) => w.nextMessage((m) => m.type === 'report')))
  const measureS = (performance.now() - t0) / 1000
  const cpuSeconds = procStat(server.pid).cpuSeconds - cpu0
  const after = o.real ? await scrapeMetrics(server.metricsUrl!) : null
  for (const c of all) c.send('stop')
  await Promise.all(all.map((c) => Promise.race([c.proc.exited, sleep(5000)])))
  await Promise.all(all.map((c) => c.stop('SIGKILL')))

  const latency = new Histogram()
  let events = 0
  for (const r of reports) {
    latency.merge(Histogram.fromJSON(r.latency))
    events += r.events ?? 0
  }
  const delta = (name: string) => (after?.[name] ?? 0) - (before?.[name] ?? 0)
  return {
    accepted: workerReports.reduce((s, r) => s + r.acked, 0) / measureS,
    delivered: events / measureS,
    errors: workerReports.reduce((s, r) => s + r.errors, 0),
    latency,
    cpuPercent: (cpuSeconds / measureS) * 100,
    statements: delta('processes_output_statements_total'),
    written: delta('processes_output_chunks_written_total'),
    measureS,
    clientCount,
  }
}

export async function run(): Promise<Report> {
  const report = new Report('output', { streams: STREAMS, workers: WORKERS, window: WINDOW, flush_ms: FLUSH_MS, measure_ms: MEASURE_MS })
  const { url, db } = await freshDatabase()
  const tenant = await createBenchTenant(db)
  const ids = await insertRunning(db, tenant.workspaceId, STREAMS, (i) => workerIdOf(i % WORKERS))
  const server = await startStreamServer(
    'server (output)',
    { url, tenant, ids, workerId: '' },
    { SSE_MAX_MS: '3600000', OUTPUT_FLUSH_MS: String(FLUSH_MS), OUTPUT_MAX_BYTES: String(64 * 1024 * 1024) },
  )
  const real = await drive('output', server, { token: tenant.token, workerToken: tenant.workerToken, ids, real: true })
  await server.stop()
  const bareServer = await startTrivialSseServer('bare SSE write loop (output)')
  const bare = await drive('output, bare SSE', bareServer, { token: '', workerToken: '', ids, real: false })
  await bareServer.stop()

  report.add({
    figure: 'output chunks accepted/s, one instance',
    value: real.accepted,
    unit: 'chunks/s',
    ceiling: bare.accepted,
    ceilingLabel: 'bare SSE',
    ratio: real.accepted / bare.accepted,
    goal: '≥ 50,000',
    pass: real.accepted >= 50_000 && real.errors === 0,
  })
  report.add({
    figure: 'output chunks delivered/s (all streams)',
    value: real.delivered,
    unit: 'events/s',
    ceiling: bare.delivered,
    ceilingLabel: 'bare SSE',
    ratio: real.delivered / bare.delivered,
  })
  const [p50, p99, b50, b99] = [real.latency.quantile(0.5), real.latency.quantile(0.99), bare.latency.quantile(0.5), bare.latency.quantile(0.99)]
  report.add({ figure: 'worker send → stream receive p50', value: p50, unit: 'ms', ceiling: b50, ceilingLabel: 'bare SSE', ratio: p50 / b50 })
  report.add({
    figure: 'worker send → stream receive p99',
    value: p99,
    unit: 'ms',
    ceiling: b99,
    ceilingLabel: 'bare SSE',
    ratio: p99 / b99,
    goal: '≤ 50 ms',
    pass: p99 <= 50,
  })
  const per10ms = real.statements / (real.measureS * 100)
  report.add({ figure: 'Postgres output statements per 10 ms', value: per10ms, unit: 'stmts', goal: '≤ 1', pass: per10ms <= 1.0001 })
  report.add({ figure: 'chunks written per statement', value: real.statements > 0 ? real.written / real.statements : 0, unit: 'rows' })
  report.add({ figure: 'server CPU', value: real.cpuPercent, unit: '% of a core', ceiling: bare.cpuPercent, ceilingLabel: 'bare SSE' })
  report.add({ figure: 'frames refused (errors)', value: real.errors, unit: '', goal: '= 0', pass: real.errors === 0 })
  report.note(
    `${WORKERS} worker processes, one WebSocket each, ≤ ${WINDOW} unacked frames each, round-robin over ${STREAMS.toLocaleString('en')} running processes, one stream each, in ${real.clientCount} client processes; the bare SSE loop ran next, with the same clients and workers; the machine's load: ${(await Bun.file('/proc/loadavg').text()).trim()}`,
  )
  report.data.latency = real.latency.toJSON()
  report.data.bare = { ...bare, latency: bare.latency.toJSON() }
  return report
}

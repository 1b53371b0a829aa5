// bench progress: live progress at full speed on one instance. 1,000 running processes, 10 streams on each
// (10,000 in all), worker processes sending `progress` as fast as the acks come back (a window of unacked
// frames each), every frame stamped with its send time so the stream clients measure worker-send →
// browser-receive. Figures: accepted progress frames/s, that latency's p50/p99, the Postgres progress
// statements and row writes per second against running processes ÷ PROGRESS_PERSIST_MS, and the server's
// memory per open stream. Ceilings in the same run, on the same machine: a bare Bun WebSocket ack server (the
// workers alone: accepted frames), and a bare SSE write loop with the same streams and workers (latency and
// memory per stream), bench/ceilings/sse-broadcast-server.ts.
import { Histogram } from './histogram'
import {
  BUN,
  BENCH_DIR,
  type Child,
  Report,
  type ServerChild,
  createBenchTenant,
  freshDatabase,
  insertRunning,
  procStat,
  scrapeMetrics,
  sleep,
  spawnChild,
} from './lib'
import { STREAMS_PER_CLIENT, startStreamServer, startTrivialSseServer } from './scenario'

const env = process.env
const PROCESSES = Number(env.BENCH_PROGRESS_PROCESSES ?? 1000)
const STREAMS = Number(env.BENCH_PROGRESS_STREAMS ?? 10_000)
const WORKERS = Number(env.BENCH_PROGRESS_WORKERS ?? 4)
/** Unacked frames per worker connection: acks come once accepted, so a small window keeps them busy. */
const WINDOW = Number(env.BENCH_PROGRESS_WINDOW ?? 256)
const PERSIST_MS = 250
const WARMUP_MS = Number(env.BENCH_WARMUP_MS ?? 3000)
const MEASURE_MS = Number(env.BENCH_MEASURE_MS ?? 10_000)

interface Run {
  framesPerSec: number
  errors: number
  errorCodes: Record<string, number>
  latency: Histogram
  events: number
  rssPerStreamBytes: number
  rssMaxBytes: number
  cpuPercent: number
  measureS: number
  metrics: { statements: number; writes: number } | null
}

const workerIdOf = (k: number) => `bench-progress-${k}`

async function drive(
  label: string,
  server: ServerChild,
  o: { token: string | null; workerToken: string; ids: number[]; streams: number; real: boolean },
): Promise<Run> {
  await sleep(500)
  const baseline = procStat(server.pid).rssBytes
  const clients: Child[] = []
  const clientCount = o.streams === 0 ? 0 : Math.max(1, Math.ceil(o.streams / STREAMS_PER_CLIENT))
  let offset = 0
  for (let c = 0; c < clientCount; c++) {
    const count = Math.floor(o.streams / clientCount) + (c < o.streams % clientCount ? 1 : 0)
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
  while (clients.reduce((n, c) => n + status(c).ready, 0) < o.streams) {
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
  const before = o.real ? await scrapeMetrics(server.metricsUrl) : null
  const cpu0 = procStat(server.pid).cpuSeconds
  const t0 = performance.now()
  let rssMaxBytes = 0
  while (performance.now() - t0 < MEASURE_MS) {
    rssMaxBytes = Math.max(rssMaxBytes, procStat(server.pid).rssBytes)
    await sleep(Math.min(500, MEASURE_MS - (performance.now() - t0)))
  }
  for (const c of all) c.send('report')
  const reports = await Promise.all(clients.map((c) => c.nextMessage((m) => m.type === 'report')))
  const workerReports = await Promise.all(workers.map((w) => w.nextMessage((m) => m.type === 'report')))
  const measureS = (performance.now() - t0) / 1000
  const cpuSeconds = procStat(server.pid).cpuSeconds - cpu0
  const after = o.real ? await scrapeMetrics(server.metricsUrl) : null
  for (const c of all) c.send('stop')
  await Promise.all(all.map((c) => Promise.race([c.proc.exited, sleep(5000)])))
  await Promise.all(all.map((c) => c.stop('SIGKILL')))

  const latency = new Histogram()
  let events = 0
  for (const r of reports) {
    latency.merge(Histogram.fromJSON(r.latency))
    events += r.events ?? 0
  }
  const errorCodes: Record<string, number> = {}
  for (const r of workerReports) for (const [code, n] of Object.entries(r.errorCodes as Record<string, number>)) errorCodes[code] = (errorCodes[code] ?? 0) + n
  const delta = (name: string) => (after?.[name] ?? 0) - (before?.[name] ?? 0)
  return {
    framesPerSec: workerReports.reduce((s, r) => s + r.acked, 0) / measureS,
    errors: workerReports.reduce((s, r) => s + r.errors, 0),
    errorCodes,
    latency,
    events,
    rssPerStreamBytes: o.streams === 0 ? 0 : (rssMaxBytes - baseline) / o.streams,
    rssMaxBytes,
    cpuPercent: (cpuSeconds / measureS) * 100,
    measureS,
    metrics: o.real
      ? { statements: delta('processes_progress_statements_total') / measureS, writes: delta('processes_progress_writes_total') / measureS }
      : null,
  }
}

export async function run(): Promise<Report> {
  const report = new Report('progress', {
    processes: PROCESSES,
    streams: STREAMS,
    workers: WORKERS,
    window: WINDOW,
    persist_ms: PERSIST_MS,
    measure_ms: MEASURE_MS,
  })
  const { url, db } = await freshDatabase()
  const tenant = await createBenchTenant(db)
  const ids = await insertRunning(db, tenant.workspaceId, PROCESSES, (i) => workerIdOf(i % WORKERS))
  // Sorted by id: worker k's share (every WORKERS-th id) is exactly the processes leased to it.
  const server = await startStreamServer(
    'server (progress)',
    { url, tenant, ids, workerId: '' },
    { SSE_MAX_MS: '3600000', PROGRESS_PERSIST_MS: String(PERSIST_MS) },
  )
  const real = await drive('progress', server, { token: tenant.token, workerToken: tenant.workerToken, ids, streams: STREAMS, real: true })
  await server.stop()
  const echoServer = await startTrivialSseServer('bare WebSocket ack server')
  const echo = await drive('progress, bare echo', echoServer, { token: null, workerToken: '', ids, streams: 0, real: false })
  await echoServer.stop()
  const sseServer = await startTrivialSseServer('bare SSE write loop')
  const bare = await drive('progress, bare SSE', sseServer, { token: null, workerToken: '', ids, streams: STREAMS, real: false })
  await sseServer.stop()

  report.add({
    figure: 'accepted progress frames/s, one instance',
    value: real.framesPerSec,
    unit: 'frames/s',
    ceiling: echo.framesPerSec,
    ceilingLabel: 'bare WS ack',
    ratio: real.framesPerSec / echo.framesPerSec,
    goal: '≥ 100,000 and ≥ 0.5×',
    pass: real.framesPerSec >= 100_000 && real.framesPerSec >= 0.5 * echo.framesPerSec && real.errors === 0,
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
    goal: '≤ 50 ms and ≤ 2×',
    pass: p99 <= 50 && p99 <= 2 * b99,
  })
  const rowsCeiling = PROCESSES / (PERSIST_MS / 1000)
  report.add({
    figure: 'Postgres progress row writes/s',
    value: real.metrics!.writes,
    unit: 'rows/s',
    ceiling: rowsCeiling,
    ceilingLabel: 'running ÷ interval',
    ratio: real.metrics!.writes / rowsCeiling,
    goal: '≤ 1.1×',
    pass: real.metrics!.writes <= 1.1 * rowsCeiling,
  })
  report.add({ figure: 'Postgres progress statements/s', value: real.metrics!.statements, unit: 'stmts/s' })
  report.add({
    figure: 'server memory per open stream',
    value: real.rssPerStreamBytes / 1024,
    unit: 'KiB',
    ceiling: bare.rssPerStreamBytes / 1024,
    ceilingLabel: 'bare SSE',
    ratio: real.rssPerStreamBytes / bare.rssPerStreamBytes,
    goal: '≤ 1.5×',
    pass: real.rssPerStreamBytes <= 1.5 * bare.rssPerStreamBytes,
  })
  report.add({ figure: 'server CPU', value: real.cpuPercent, unit: '% of a core', ceiling: bare.cpuPercent, ceilingLabel: 'bare SSE' })
  report.add({
    figure: 'stream events received/s',
    value: real.events / real.measureS,
    unit: '/s',
    ceiling: bare.events / bare.measureS,
    ceilingLabel: 'bare SSE',
  })
  report.add({ figure: 'frames refused (errors)', value: real.errors, unit: '', goal: '= 0', pass: real.errors === 0 })
  if (real.errors > 0) report.note(`errors: ${JSON.stringify(real.errorCodes)}`)
  report.note(
    `${WORKERS} worker processes, one WebSocket each, ≤ ${WINDOW} unacked frames each, round-robin over their share of ${PROCESSES.toLocaleString('en')} processes; ${STREAMS.toLocaleString('en')} streams (${STREAMS / PROCESSES} per process) in ${Math.ceil(STREAMS / STREAMS_PER_CLIENT)} client processes`,
  )
  report.note(
    'the server shows one state per process per event-loop turn (coalesced), the bare SSE loop writes every frame to every stream; latency is measured on the states each stream receives',
  )
  report.data.runs = {
    real: { ...real, latency: real.latency.toJSON() },
    echo: { ...echo, latency: echo.latency.toJSON() },
    bare: { ...bare, latency: bare.latency.toJSON() },
  }
  return report
}

// bench ingest: worker `progress` frames per second one instance accepts (acks received) with coalescing on
// (PROGRESS_PERSIST_MS = 100, the default), from several worker connections, each holding its share of many
// running processes, and the Postgres row writes and statements that costs (the server's own counters:
// processes_progress_frames_total / _writes_total / _statements_total). Ceiling: the same workers against a
// trivial Bun WebSocket server that parses each frame and acks it at once (no database).
import {
  BASE_REDIS_URL,
  BENCH_DIR,
  BUN,
  type Child,
  type ServerChild,
  Report,
  cleanRedisPrefix,
  createBenchTenant,
  freshDatabase,
  insertRunning,
  procStat,
  redisPrefix,
  scrapeMetrics,
  sleep,
  spawnChild,
} from './lib'
import { startStreamServer, startTrivialSseServer } from './scenario'

const env = process.env
export const INGEST_WORKERS = Number(env.BENCH_INGEST_WORKERS ?? 4)
export const INGEST_PROCESSES = Number(env.BENCH_INGEST_PROCESSES ?? 200)
/** Unacked frames per connection: acks come when the coalesced write commits, up to 100 ms later. */
const WINDOW = Number(env.BENCH_INGEST_WINDOW ?? 2000)
const WARMUP_MS = Number(env.BENCH_WARMUP_MS ?? 3000)
const MEASURE_MS = Number(env.BENCH_MEASURE_MS ?? 10_000)
const GOAL_FRAMES_PER_S = 20_000
const GOAL_COALESCING = 10

export interface IngestRun {
  framesPerSec: number
  acked: number
  errors: number
  errorCodes: Record<string, number>
  errorSamples: string[]
  measureS: number
  cpuSeconds: number
  rssBytes: number
  /** Server-side counters over the window (real server only). */
  frames?: number
  writes?: number
  statements?: number
}

async function drive(label: string, server: ServerChild, token: string, ids: number[], workerId: (k: number) => string): Promise<IngestRun> {
  const workers: Child[] = []
  for (let k = 0; k < INGEST_WORKERS; k++) {
    workers.push(
      spawnChild(`${label}: worker ${k + 1}`, [BUN, `${BENCH_DIR}load/worker-load.ts`], {
        BENCH_WORKER: JSON.stringify({
          url: server.url,
          token,
          workerId: workerId(k),
          mode: 'ingest',
          ids: ids.filter((_, i) => i % INGEST_WORKERS === k),
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
  for (const w of workers) w.send('reset')
  await Promise.all(workers.map((w) => w.nextMessage((m) => m.type === 'reset-ok')))
  const before = await scrapeMetrics(server.metricsUrl).catch(() => null)
  const stat0 = procStat(server.pid)
  const t0 = performance.now()
  let rssBytes = 0
  while (performance.now() - t0 < MEASURE_MS) {
    await sleep(Math.min(1000, MEASURE_MS - (performance.now() - t0)))
    rssBytes = Math.max(rssBytes, procStat(server.pid).rssBytes)
  }
  for (const w of workers) w.send('report')
  const reports = await Promise.all(workers.map((w) => w.nextMessage((m) => m.type === 'report')))
  const measureS = (performance.now() - t0) / 1000
  const stat1 = procStat(server.pid)
  const after = await scrapeMetrics(server.metricsUrl).catch(() => null)
  for (const w of workers) w.send('stop')
  await Promise.all(workers.map((w) => Promise.race([w.proc.exited, sleep(5000)])))
  await Promise.all(workers.map((w) => w.stop('SIGKILL')))

  const acked = reports.reduce((s, r) => s + r.acked, 0)
  const errorCodes: Record<string, number> = {}
  for (const r of reports) for (const [code, n] of Object.entries(r.errorCodes as Record<string, number>)) errorCodes[code] = (errorCodes[code] ?? 0) + n
  const delta = (name: string) => (before && after ? (after[name] ?? 0) - (before[name] ?? 0) : undefined)
  return {
    framesPerSec: acked / measureS,
    acked,
    errors: reports.reduce((s, r) => s + r.errors, 0),
    errorCodes,
    errorSamples: reports.flatMap((r) => r.errorSamples).slice(0, 5),
    measureS,
    cpuSeconds: stat1.cpuSeconds - stat0.cpuSeconds,
    rssBytes,
    frames: delta('processes_progress_frames_total'),
    writes: delta('processes_progress_writes_total'),
    statements: delta('processes_progress_statements_total'),
  }
}

/** Measures the real server and the trivial ceiling; adds the rows under `tag`. */
export async function ingestInto(report: Report, tag = '') {
  const { url, db } = await freshDatabase()
  const tenant = await createBenchTenant(db)
  const workerId = (k: number) => `bench-ingest-${k}`
  const ids = await insertRunning(db, tenant.workspaceId, INGEST_PROCESSES, (i) => workerId(i % INGEST_WORKERS))
  const prefix = redisPrefix()
  cleanRedisPrefix(BASE_REDIS_URL, prefix)
  const server = await startStreamServer('server (ingest)', { url, tenant, ids, workerId: '' }, { REDIS_URL: BASE_REDIS_URL, REDIS_PREFIX: prefix })
  // Sorted by id, so worker k's share (every INGEST_WORKERS-th id) is exactly the processes leased to it.
  const real = await drive('ingest', server, tenant.workerToken, ids, workerId)
  await server.stop()
  const trivialServer = await startTrivialSseServer('trivial WebSocket ack server')
  const trivial = await drive('ingest ceiling', trivialServer, '', ids, workerId)
  await trivialServer.stop()

  const frames = real.frames ?? real.acked
  const writes = real.writes ?? NaN
  const coalescing = frames / writes
  const p = tag ? `${tag} ` : ''
  report.add({
    figure: `${p}progress frames accepted`,
    value: real.framesPerSec,
    unit: 'frames/s',
    ceiling: trivial.framesPerSec,
    ceilingLabel: 'trivial ack',
    ratio: real.framesPerSec / trivial.framesPerSec,
    goal: `≥ ${GOAL_FRAMES_PER_S.toLocaleString('en-US')}/s`,
    pass: real.framesPerSec >= GOAL_FRAMES_PER_S && real.errors === 0,
  })
  report.add({ figure: `${p}Postgres row writes`, value: writes / real.measureS, unit: 'rows/s' })
  report.add({ figure: `${p}UPDATE statements`, value: (real.statements ?? NaN) / real.measureS, unit: 'stmts/s' })
  report.add({ figure: `${p}frames per row written`, value: coalescing, unit: '', goal: `≥ ${GOAL_COALESCING}×`, pass: coalescing >= GOAL_COALESCING })
  report.add({
    figure: `${p}server CPU while ingesting`,
    value: (real.cpuSeconds / real.measureS) * 100,
    unit: '% of a core',
    ceiling: (trivial.cpuSeconds / trivial.measureS) * 100,
    ceilingLabel: 'trivial',
  })
  report.add({ figure: `${p}frames refused (errors)`, value: real.errors, unit: '', goal: '= 0', pass: real.errors === 0 })
  if (real.errors > 0) report.note(`${p}errors: ${JSON.stringify(real.errorCodes)} ${real.errorSamples.join(' | ')}`)
  report.data[tag || 'ingest'] = { real, trivial }
}

export async function run(): Promise<Report> {
  const report = new Report('ingest', {
    worker_connections: INGEST_WORKERS,
    processes: INGEST_PROCESSES,
    window_per_connection: WINDOW,
    progress_flush_ms: 100,
    measure_ms: MEASURE_MS,
  })
  await ingestInto(report)
  report.note(
    `${INGEST_WORKERS} worker processes, one WebSocket each, each sending progress (with message and attempt) round-robin over its ${INGEST_PROCESSES / INGEST_WORKERS} processes, ≤ ${WINDOW} unacked`,
  )
  report.note('frames accepted = acks received by the workers (an ack follows the commit of the coalesced write that carries the frame)')
  return report
}

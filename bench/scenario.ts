// The stream scenario behind fanout, churn, cluster and realtime: N EventSource-style streams spread over
// several client processes, optionally a worker process broadcasting `progress` on the watched processes every
// intervalMs, a warm-up, then a measured window with the stream server's RSS and CPU sampled from /proc.
import { Histogram } from './histogram'
import {
  BUN,
  BENCH_DIR,
  type BenchTenant,
  type Child,
  type ProcStat,
  type ServerChild,
  createBenchTenant,
  freshDatabase,
  insertRunning,
  procStat,
  scrapeMetrics,
  sleep,
  spawnChild,
  startProcessesServer,
  startServer,
} from './lib'

/** Streams per client process: well under the 20,000 open-file limit, and enough processes to use both cores. */
export const STREAMS_PER_CLIENT = 4000
/** After the last broadcast of a window: time for its events to reach every stream. */
const DRAIN_MS = 1500

export interface StreamsOptions {
  label: string
  /** Where the streams connect. */
  streamServer: ServerChild
  /** Where the broadcasting worker connects (the same server, or another instance). */
  workerServer?: ServerChild
  token: string | null
  workerToken?: string
  workerId?: string
  /** The watched processes: stream i watches ids[i % ids.length]. */
  ids: number[]
  /** Optional, parallel to ids: each stream's group, reported with every tagged burst (StreamsResult.bursts). */
  groups?: number[]
  /** The processes the worker broadcasts to on workerServer (default: ids). */
  broadcastIds?: number[]
  /** More broadcast targets, taking turns with workerServer tick by tick (worker-load's `alternate`). */
  alternate?: Array<{ server: ServerChild; workerId: string; ids: number[] }>
  streams: number
  rampPerSec: number
  /** Re-open a stream on a new connection as soon as the server ends it. */
  reconnect: boolean
  /** Broadcast period; null: no worker, no updates. */
  broadcastMs: number | null
  /** Spread each period's frames evenly over it instead of sending them all at once. */
  spread?: boolean
  warmupMs: number
  measureMs: number
  /** Also sample the RSS of these (e.g. the worker's instance in a cluster). */
  alsoWatch?: ServerChild[]
  /** Called at the measured window's edges (quiet: no broadcast in flight), e.g. to read counters. */
  onWindowStart?: () => Promise<void>
  onWindowEnd?: () => Promise<void>
}

export interface StreamsResult {
  label: string
  streams: number
  watchedProcesses: number
  latency: Histogram
  /** With alternate targets: each burst's group and the latencies of all its events (every client's). */
  bursts: Map<number, { group: number; ms: number[] }>
  connect: Histogram
  counters: Record<string, number>
  failureSamples: string[]
  worker: {
    sent: number
    acked: number
    errors: number
    ticks: number
    lateTicks: number
    errorCodes: Record<string, number>
    ack: Histogram
    targetAcks: Histogram[]
  } | null
  baseline: ProcStat
  /** RSS samples (bytes) during the measured window, about one a second, with their offsets in ms. */
  rssSeries: Array<[number, number]>
  rssMaxBytes: number
  rssPerStreamBytes: number
  cpuSeconds: number
  measureS: number
  rampS: number
  /** Events received / (frames sent × streams per process) in the window: 1.0 means every stream got every frame. */
  deliveryRatio: number | null
  others: Array<{ label: string; rssMaxBytes: number; cpuSeconds: number }>
  /** Largest event-loop lag the stream server reported while measuring (sampled about once a second). */
  eventLoopLagMaxMs: number | null
  /** Connections the kernel dropped from full listen queues while measuring (any process on the machine). */
  listenOverflows: number | null
}

const latestStatus = (child: Child) => child.messages.findLast((m) => m.type === 'status') ?? { ready: 0, open: 0, failures: 0 }

export async function runStreams(o: StreamsOptions): Promise<StreamsResult> {
  const server = o.streamServer
  await sleep(500)
  const baseline = procStat(server.pid)

  const clientCount = Math.max(1, Math.ceil(o.streams / STREAMS_PER_CLIENT))
  const clients: Child[] = []
  let offset = 0
  for (let c = 0; c < clientCount; c++) {
    const count = Math.floor(o.streams / clientCount) + (c < o.streams % clientCount ? 1 : 0)
    clients.push(
      spawnChild(`${o.label}: stream clients ${c + 1}/${clientCount}`, [BUN, `${BENCH_DIR}load/sse-clients.ts`], {
        BENCH_CLIENT: JSON.stringify({
          host: '127.0.0.1',
          port: server.port,
          token: o.token,
          paths: o.ids.map((id) => `/processes/${id}/stream`),
          groups: o.groups,
          count,
          offset,
          rampPerSec: Math.max(1, Math.round(o.rampPerSec / clientCount)),
          reconnect: o.reconnect,
          statusEveryMs: 500,
        }),
      }),
    )
    offset += count
  }

  // Every stream connected and holding its first state.
  const rampStarted = Date.now()
  const rampBudgetMs = (o.streams / o.rampPerSec) * 1000 + 60_000
  for (;;) {
    const ready = clients.reduce((n, c) => n + latestStatus(c).ready, 0)
    if (ready >= o.streams) break
    for (const c of clients) if (c.proc.exitCode !== null) throw new Error(`${c.label} exited:\n${c.output().slice(-3000)}`)
    if (Date.now() - rampStarted > rampBudgetMs) {
      const failures = clients.map((c) => latestStatus(c))
      throw new Error(`${o.label}: only ${ready} of ${o.streams} streams ready after ${rampBudgetMs} ms: ${JSON.stringify(failures)}`)
    }
    await sleep(200)
  }
  const rampS = (Date.now() - rampStarted) / 1000

  let worker: Child | null = null
  if (o.broadcastMs !== null) {
    const target = o.workerServer ?? server
    worker = spawnChild(`${o.label}: worker`, [BUN, `${BENCH_DIR}load/worker-load.ts`], {
      BENCH_WORKER: JSON.stringify({
        url: target.url,
        token: o.workerToken ?? '',
        workerId: o.workerId ?? 'bench-broadcaster',
        mode: 'broadcast',
        ids: o.broadcastIds ?? o.ids,
        intervalMs: o.broadcastMs,
        spread: o.spread ?? false,
        alternate: o.alternate?.map((t) => ({ url: t.server.url, workerId: t.workerId, ids: t.ids })),
        window: 0,
        // Every benchmark process is inserted as claimed once (attempts = 1): the frames carry that fencing token.
        attempt: 1,
      }),
    })
    await worker.nextMessage((m) => m.type === 'ready', 30_000)
    worker.send('start')
    await worker.nextMessage((m) => m.type === 'started')
  }

  await sleep(o.warmupMs)
  // Window edges are quiet: pause the worker, let in-flight events land, reset every counter, resume.
  // So "events received = frames sent × streams per process" holds exactly when nothing is lost or conflated.
  const quiesce = async () => {
    if (!worker) return
    worker.send('pause')
    await worker.nextMessage((m) => m.type === 'paused')
    await sleep(DRAIN_MS)
  }
  await quiesce()
  const all = worker ? [...clients, worker] : clients
  for (const c of all) c.send('reset')
  await Promise.all(all.map((c) => c.nextMessage((m) => m.type === 'reset-ok')))
  await o.onWindowStart?.()
  const start = procStat(server.pid)
  const othersStart = (o.alsoWatch ?? []).map((s) => procStat(s.pid))
  const t0 = Date.now()
  if (worker) {
    worker.send('start')
    await worker.nextMessage((m) => m.type === 'started')
  }
  const rssSeries: Array<[number, number]> = []
  const othersMax = (o.alsoWatch ?? []).map(() => 0)
  const overflows0 = listenOverflows()
  // The server's own event-loop lag gauge (the real server has one; the trivial one has no /metrics).
  let lagMaxMs: number | null = null
  while (Date.now() - t0 < o.measureMs) {
    rssSeries.push([Date.now() - t0, procStat(server.pid).rssBytes])
    const lag = (await scrapeMetrics(server.metricsUrl).catch(() => null))?.processes_event_loop_lag_ms
    if (lag !== undefined) lagMaxMs = Math.max(lagMaxMs ?? 0, lag)
    for (const [i, s] of (o.alsoWatch ?? []).entries()) othersMax[i] = Math.max(othersMax[i]!, procStat(s.pid).rssBytes)
    await sleep(Math.min(1000, o.measureMs - (Date.now() - t0)))
  }
  await quiesce()
  await o.onWindowEnd?.()
  for (const c of all) c.send('report')
  const reports = await Promise.all(clients.map((c) => c.nextMessage((m) => m.type === 'report')))
  const workerReport = worker ? await worker.nextMessage((m) => m.type === 'report') : null
  const end = procStat(server.pid)
  const overflows1 = listenOverflows()
  rssSeries.push([Date.now() - t0, end.rssBytes])
  const measureS = (Date.now() - t0) / 1000
  const othersEnd = (o.alsoWatch ?? []).map((s) => procStat(s.pid))

  for (const c of all) c.send('stop')
  await Promise.all(all.map((c) => Promise.race([c.proc.exited, sleep(5000)])))
  await Promise.all(all.map((c) => c.stop('SIGKILL')))

  const latency = new Histogram()
  const bursts = new Map<number, { group: number; ms: number[] }>()
  const connect = new Histogram()
  const counters: Record<string, number> = {}
  const failureSamples: string[] = []
  for (const r of reports) {
    latency.merge(Histogram.fromJSON(r.latency))
    for (const [burst, group, ms] of (r.bursts ?? []) as Array<[number, number, number[]]>) {
      if (!bursts.has(burst)) bursts.set(burst, { group, ms: [] })
      bursts.get(burst)!.ms.push(...ms)
    }
    connect.merge(Histogram.fromJSON(r.connect))
    for (const key of ['attempts', 'established', 'failures', 'events', 'keepalives', 'doneEvents', 'windowsEnded', 'dropped', 'bytes', 'open', 'ready']) {
      counters[key] = (counters[key] ?? 0) + (r[key] ?? 0)
    }
    failureSamples.push(...r.failureSamples)
  }
  const rssMaxBytes = Math.max(...rssSeries.map(([, rss]) => rss))
  return {
    label: o.label,
    streams: o.streams,
    watchedProcesses: o.ids.length,
    latency,
    bursts,
    connect,
    counters,
    failureSamples: failureSamples.slice(0, 10),
    worker: workerReport
      ? {
          sent: workerReport.sent,
          acked: workerReport.acked,
          errors: workerReport.errors,
          ticks: workerReport.ticks,
          lateTicks: workerReport.lateTicks,
          errorCodes: workerReport.errorCodes,
          ack: Histogram.fromJSON(workerReport.ack),
          targetAcks: (workerReport.targetAcks ?? []).map((h: any) => Histogram.fromJSON(h)),
        }
      : null,
    baseline,
    rssSeries,
    rssMaxBytes,
    rssPerStreamBytes: (rssMaxBytes - baseline.rssBytes) / o.streams,
    cpuSeconds: end.cpuSeconds - start.cpuSeconds,
    measureS,
    rampS,
    // Each frame sent should reach every stream of its process (streams / ids of them).
    deliveryRatio: workerReport && workerReport.sent > 0 ? counters.events! / ((workerReport.sent * o.streams) / o.ids.length) : null,
    others: (o.alsoWatch ?? []).map((s, i) => ({
      label: s.label,
      rssMaxBytes: othersMax[i]!,
      cpuSeconds: othersEnd[i]!.cpuSeconds - othersStart[i]!.cpuSeconds,
    })),
    eventLoopLagMaxMs: lagMaxMs,
    listenOverflows: overflows0 === null || overflows1 === null ? null : overflows1 - overflows0,
  }
}

/**
 * The kernel's count of connections dropped because a listen queue was full (machine-wide, from nstat):
 * a stalled accept loop shows here, and as 1 s / 3 s connect times (SYN retransmits) in the clients.
 */
function listenOverflows(): number | null {
  if (!Bun.which('nstat')) return null
  const out = Bun.spawnSync(['nstat', '-az', 'TcpExtListenOverflows']).stdout.toString()
  const match = /TcpExtListenOverflows\s+(\d+)/.exec(out)
  return match ? Number(match[1]) : null
}

/** A JSON-friendly summary of a run (histograms as percentiles). */
export function summarize(r: StreamsResult) {
  const pct = (h: Histogram) => ({ count: h.count, p50: h.quantile(0.5), p90: h.quantile(0.9), p99: h.quantile(0.99), max: h.max, mean: h.mean })
  return {
    label: r.label,
    streams: r.streams,
    watched_processes: r.watchedProcesses,
    latency_ms: pct(r.latency),
    connect_ms: pct(r.connect),
    worker_ack_ms: r.worker ? pct(r.worker.ack) : null,
    worker: r.worker
      ? {
          sent: r.worker.sent,
          acked: r.worker.acked,
          errors: r.worker.errors,
          ticks: r.worker.ticks,
          late_ticks: r.worker.lateTicks,
          error_codes: r.worker.errorCodes,
        }
      : null,
    counters: r.counters,
    failure_samples: r.failureSamples,
    delivery_ratio: r.deliveryRatio,
    rss_baseline_mib: r.baseline.rssBytes / 2 ** 20,
    rss_max_mib: r.rssMaxBytes / 2 ** 20,
    rss_per_stream_kib: r.rssPerStreamBytes / 1024,
    rss_series_mib: r.rssSeries.map(([t, rss]) => [t, Math.round((rss / 2 ** 20) * 10) / 10]),
    cpu_seconds: r.cpuSeconds,
    cpu_percent_of_one_core: (r.cpuSeconds / r.measureS) * 100,
    measure_s: r.measureS,
    ramp_s: r.rampS,
    others: r.others.map((x) => ({ label: x.label, rss_max_mib: x.rssMaxBytes / 2 ** 20, cpu_seconds: x.cpuSeconds })),
    event_loop_lag_max_ms: r.eventLoopLagMaxMs,
    listen_overflows: r.listenOverflows,
  }
}

// ---------------------------------------------------------------------------------------------
// Setups shared by the stream benchmarks.

export interface RealSetup {
  url: string
  tenant: BenchTenant
  ids: number[]
  workerId: string
}

/** A fresh database with a tenant and `watched` running processes leased to one broadcasting worker. */
export async function realSetup(watched: number, workerId = 'bench-broadcaster'): Promise<RealSetup> {
  const { url, db } = await freshDatabase()
  const tenant = await createBenchTenant(db)
  const ids = await insertRunning(db, tenant.workspaceId, watched, () => workerId)
  return { url, tenant, ids, workerId }
}

/** The real server for stream benchmarks: `SSE_MAX_MS` as given (a long window means no churn). */
export function startStreamServer(label: string, setup: RealSetup, env: Record<string, string | undefined>) {
  // The leases must outlive the run: no sweep may fail the broadcast processes between two phases.
  return startProcessesServer(label, { DATABASE_URL: setup.url, JOB_TIMEOUT_MS: '86400000', ...env })
}

export function startTrivialSseServer(label = 'trivial SSE server') {
  return startServer(label, [BUN, `${BENCH_DIR}ceilings/sse-broadcast-server.ts`])
}

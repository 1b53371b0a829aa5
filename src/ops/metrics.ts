// Counters and gauges rendered as Prometheus text. Gauges, and counters kept by their owners, are read at
// scrape time.
//
// Every label set is bounded by design (1,500 requests with random 16 KB paths once grew /metrics
// to 49 MB): routes are the app's templates or `unmatched` (and past MAX_ROUTES, `other`), methods the
// known ones or OTHER, statuses the codes the server itself answers with (100–599).

/** Methods counted by name; anything else a client sends is `OTHER`. */
const KNOWN_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])
export const knownMethod = (method: string): string => (KNOWN_METHODS.has(method) ? method : 'OTHER')
/** Far more than the app's routes (~60): only a bug passing a raw path could reach it, and then it stops growing. */
const MAX_ROUTES = 500
export class Metrics {
  /** Per method+route, per status: the count and total time. Nested maps: no key string built per request. */
  private readonly requests = new Map<string, Map<number, { labels: string; count: number; ms: number }>>()
  /** Queue depth, wait/run times, completions and failures (the block at the end of this file). */
  readonly jobs = new JobMetrics()
  /** Table sizes, dead tuples, oldest pending age, what retention pruned (the block after job metrics). */
  readonly storage = new StorageMetrics()
  readonly counters = {
    redis_publishes: 0,
    progress_frames: 0,
    progress_writes: 0,
    progress_statements: 0,
    output_statements: 0,
    output_chunks_written: 0,
    output_frames: 0,
    worker_frames: 0,
    sse_connects: 0,
    sweeps_failed_processes: 0,
  }
  private readonly gauges = new Map<string, () => number>()
  private readonly ownedCounters = new Map<string, { help: string; read: () => number }>()
  /** How late a 250 ms timer fired, last sample: the event loop's lag. */
  eventLoopLagMs = 0
  /** Commit-to-delivery time of the last change that arrived from another instance through Redis. */
  hubLagMs = 0
  private lagTimer: Timer | null = null

  startLagMonitor(intervalMs = 250) {
    let expected = performance.now() + intervalMs
    this.lagTimer ??= setInterval(() => {
      const now = performance.now()
      this.eventLoopLagMs = Math.max(0, now - expected)
      expected = now + intervalMs
    }, intervalMs)
    this.lagTimer.unref?.()
  }

  stopLagMonitor() {
    if (this.lagTimer) clearInterval(this.lagTimer)
    this.lagTimer = null
  }

  /** `route`: a route template or `unmatched`, never a raw path. */
  request(method: string, route: string, status: number, ms: number) {
    method = knownMethod(method)
    if (status < 100 || status > 599) status = 500
    let key = `${method} ${route}`
    let byStatus = this.requests.get(key)
    if (byStatus === undefined && this.requests.size >= MAX_ROUTES) {
      route = 'other'
      key = `${method} other`
      byStatus = this.requests.get(key)
    }
    if (byStatus === undefined) this.requests.set(key, (byStatus = new Map()))
    let sample = byStatus.get(status)
    if (sample === undefined) {
      const labels = `method="${method}",route="${route.replaceAll('"', '')}",status="${status}"`
      byStatus.set(status, (sample = { labels, count: 0, ms: 0 }))
    }
    sample.count++
    sample.ms += ms
  }

  private samples() {
    return [...this.requests.values()].flatMap((byStatus) => [...byStatus.values()])
  }

  gauge(name: string, read: () => number) {
    this.gauges.set(name, read)
  }

  /** A counter its owner keeps (e.g. the hub's), rendered as `processes_<name>_total`. */
  counter(name: string, help: string, read: () => number) {
    this.ownedCounters.set(name, { help, read })
  }

  render(): string {
    const out: string[] = []
    out.push('# HELP processes_http_requests_total HTTP requests by route and status.')
    out.push('# TYPE processes_http_requests_total counter')
    const samples = this.samples()
    for (const { labels, count } of samples) out.push(`processes_http_requests_total{${labels}} ${count}`)
    out.push('# HELP processes_http_request_duration_ms_sum Total time spent answering, in ms.')
    out.push('# TYPE processes_http_request_duration_ms_sum counter')
    for (const { labels, ms } of samples) out.push(`processes_http_request_duration_ms_sum{${labels}} ${ms.toFixed(3)}`)
    for (const [name, value] of Object.entries(this.counters)) {
      out.push(`# TYPE processes_${name}_total counter`, `processes_${name}_total ${value}`)
    }
    for (const [name, { help, read }] of this.ownedCounters) {
      out.push(`# HELP processes_${name}_total ${help}`, `# TYPE processes_${name}_total counter`, `processes_${name}_total ${read()}`)
    }
    const { progress_frames, progress_writes } = this.counters
    out.push('# HELP processes_progress_coalescing_ratio Progress frames accepted per row written.')
    out.push('# TYPE processes_progress_coalescing_ratio gauge')
    out.push(`processes_progress_coalescing_ratio ${progress_writes === 0 ? 0 : (progress_frames / progress_writes).toFixed(3)}`)
    out.push('# HELP processes_event_loop_lag_ms How late the last 250 ms timer fired.')
    out.push('# TYPE processes_event_loop_lag_ms gauge', `processes_event_loop_lag_ms ${this.eventLoopLagMs.toFixed(3)}`)
    out.push('# HELP processes_hub_lag_ms Commit-to-delivery time of the last change received from another instance.')
    out.push('# TYPE processes_hub_lag_ms gauge', `processes_hub_lag_ms ${this.hubLagMs.toFixed(3)}`)
    for (const [name, read] of this.gauges) {
      out.push(`# TYPE processes_${name} gauge`, `processes_${name} ${read()}`)
    }
    this.jobs.render(out)
    this.storage.render(out)
    return `${out.join('\n')}\n`
  }
}

// ── Job metrics ──────────────────────────────────────────────────────────────────────────────────────────
// Queue depth by type and status (sampled from SQL, at most every DEPTH_SAMPLE_MS), wait and run times
// (histograms, observed as this instance commits starts and finishes), completions and failures per type.

/** Seconds: a job waits from a fraction of a second (a worker is waiting) to hours (none is). */
export const JOB_SECONDS_BUCKETS = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400]
/** Queue depth is a `group by` over the non-final processes: one scrape every few seconds is plenty. */
export const DEPTH_SAMPLE_MS = 5000
/** Types are client-chosen labels: beyond this many, the rest are counted as type="other". */
const MAX_JOB_TYPES = 200

/** The fields of a published process that job metrics read. */
export interface JobState {
  type: string
  status: string
  created_at: string
  updated_at: string
  started_at: string | null
  finished_at: string | null
}

export interface DepthRow {
  type: string
  status: string
  count: number
}

class Histogram {
  readonly counts = new Array<number>(JOB_SECONDS_BUCKETS.length + 1).fill(0)
  sum = 0
  observe(seconds: number) {
    let i = 0
    while (i < JOB_SECONDS_BUCKETS.length && seconds > JOB_SECONDS_BUCKETS[i]!) i++
    this.counts[i]!++
    this.sum += seconds
  }
}

export class JobMetrics {
  private readonly wait = new Map<string, Histogram>()
  private readonly run = new Map<string, Histogram>()
  private readonly completed = new Map<string, number>()
  private readonly failed = new Map<string, number>()
  private readonly types = new Set<string>()
  /** type → status → count, from the last sample; pairs seen once stay, at 0, so a drained queue reads 0. */
  private depth = new Map<string, Map<string, number>>()
  private sampledAt = 0
  private sampling: Promise<void> | null = null

  /**
   * A state committed on this instance. A transition sets `updated_at` and the timestamp it is about in one
   * statement (`now()`), so equal strings say this change is the start (`started_at`) or the finish
   * (`finished_at`); a progress or log change leaves them apart. Run time is started → final (a reviewed
   * process's review time included), observed once, at completed, failed or cancelled.
   */
  observe(processes: readonly JobState[]) {
    for (const p of processes) {
      if (p.status === 'running') {
        if (p.started_at !== null && p.started_at === p.updated_at) this.histogram(this.wait, p.type).observe(secondsBetween(p.created_at, p.started_at))
      } else if (p.finished_at !== null && p.finished_at === p.updated_at && (p.status === 'completed' || p.status === 'failed' || p.status === 'cancelled')) {
        const type = this.label(p.type)
        if (p.status === 'completed') this.completed.set(type, (this.completed.get(type) ?? 0) + 1)
        if (p.status === 'failed') this.failed.set(type, (this.failed.get(type) ?? 0) + 1)
        if (p.started_at !== null) this.histogram(this.run, type).observe(secondsBetween(p.started_at, p.finished_at))
      }
    }
  }

  /** Re-sample queue depth when the last sample is older than DEPTH_SAMPLE_MS; concurrent scrapes share one query. */
  async refreshDepth(read: () => Promise<DepthRow[]>, now = Date.now()) {
    if (now - this.sampledAt < DEPTH_SAMPLE_MS) return
    this.sampling ??= read()
      .then((rows) => {
        const next = new Map<string, Map<string, number>>()
        for (const [type, byStatus] of this.depth) next.set(type, new Map([...byStatus.keys()].map((status) => [status, 0])))
        for (const row of rows) {
          const type = this.label(row.type)
          let byStatus = next.get(type)
          if (!byStatus) next.set(type, (byStatus = new Map()))
          byStatus.set(row.status, (byStatus.get(row.status) ?? 0) + row.count)
        }
        this.depth = next
        this.sampledAt = Date.now()
      })
      .finally(() => {
        this.sampling = null
      })
    await this.sampling
  }

  render(out: string[]) {
    out.push('# HELP processes_queue_depth Non-final processes by type and status (sampled at most every 5 s).')
    out.push('# TYPE processes_queue_depth gauge')
    for (const [type, byStatus] of this.depth) {
      for (const [status, count] of byStatus) out.push(`processes_queue_depth{type="${type}",status="${status}"} ${count}`)
    }
    this.renderHistogram(out, 'processes_job_wait_seconds', 'Time from creation to start, for starts committed on this instance.', this.wait)
    this.renderHistogram(
      out,
      'processes_job_run_seconds',
      'Time from start to completed, failed or cancelled, for finishes committed on this instance.',
      this.run,
    )
    out.push('# HELP processes_jobs_completed_total Processes completed, per type (this instance).')
    out.push('# TYPE processes_jobs_completed_total counter')
    for (const [type, n] of this.completed) out.push(`processes_jobs_completed_total{type="${type}"} ${n}`)
    out.push('# HELP processes_jobs_failed_total Processes failed (by their worker or by the lease sweep), per type (this instance).')
    out.push('# TYPE processes_jobs_failed_total counter')
    for (const [type, n] of this.failed) out.push(`processes_jobs_failed_total{type="${type}"} ${n}`)
  }

  private renderHistogram(out: string[], name: string, help: string, byType: Map<string, Histogram>) {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`)
    for (const [type, h] of byType) {
      let cumulative = 0
      JOB_SECONDS_BUCKETS.forEach((le, i) => {
        cumulative += h.counts[i]!
        out.push(`${name}_bucket{type="${type}",le="${le}"} ${cumulative}`)
      })
      cumulative += h.counts[JOB_SECONDS_BUCKETS.length]!
      out.push(`${name}_bucket{type="${type}",le="+Inf"} ${cumulative}`)
      out.push(`${name}_sum{type="${type}"} ${h.sum.toFixed(3)}`, `${name}_count{type="${type}"} ${cumulative}`)
    }
  }

  private histogram(map: Map<string, Histogram>, type: string): Histogram {
    const label = this.label(type)
    let h = map.get(label)
    if (!h) map.set(label, (h = new Histogram()))
    return h
  }

  /** Types match ^[a-z][a-z0-9_.-]{0,63}$ (nothing to escape); their number is capped. */
  private label(type: string): string {
    if (this.types.has(type)) return type
    if (this.types.size >= MAX_JOB_TYPES) return 'other'
    this.types.add(type)
    return type
  }
}

function secondsBetween(from: string, to: string): number {
  return Math.max(0, (Date.parse(to) - Date.parse(from)) / 1000)
}

// ── Storage metrics ──────────────────────────────────────────────────────────────────────────────────────
// Table sizes and dead tuples (partitions summed into their table) and the oldest pending process's age,
// sampled from the catalog at most every STORAGE_SAMPLE_MS; retention's totals (src/db/retention.ts).

export const STORAGE_SAMPLE_MS = 10_000

export interface StorageSample {
  tables: { name: string; bytes: number; live_rows: number; dead_rows: number }[]
  /** Seconds the oldest claimable pending process has waited since it came due (run_at; 0: none waiting). */
  oldest_pending_s: number
}

/** What retention did since start (src/db/retention.ts); per table where keyed. */
export interface RetentionCounts {
  partitions_created: Record<string, number>
  partitions_dropped: Record<string, number>
  /** Rows gone with dropped partitions (their estimate, pg_class.reltuples, before the drop; counted when never analyzed). */
  rows_dropped: Record<string, number>
  processes_deleted: number
  idempotency_keys_deleted: number
  passes: number
  errors: number
  vacuums: number
  /** Seconds those vacuums took, summed (with vacuums: their mean length, against the rate dead rows come at). */
  vacuum_seconds: number
}

export class StorageMetrics {
  private sample: StorageSample | null = null
  private sampledAt = 0
  private sampling: Promise<void> | null = null
  /** Set by the server to its retention job's totals. */
  retention: RetentionCounts | null = null

  async refresh(read: () => Promise<StorageSample>, now = Date.now()) {
    if (now - this.sampledAt < STORAGE_SAMPLE_MS) return
    this.sampling ??= read()
      .then((sample) => {
        this.sample = sample
        this.sampledAt = Date.now()
      })
      .finally(() => {
        this.sampling = null
      })
    await this.sampling
  }

  render(out: string[]) {
    if (this.sample) {
      out.push('# HELP processes_table_bytes On-disk size of each table with its indexes and partitions (sampled at most every 10 s).')
      out.push('# TYPE processes_table_bytes gauge')
      for (const t of this.sample.tables) out.push(`processes_table_bytes{table="${t.name}"} ${t.bytes}`)
      out.push('# HELP processes_table_live_rows Live rows per table, as the statistics collector last counted them.')
      out.push('# TYPE processes_table_live_rows gauge')
      for (const t of this.sample.tables) out.push(`processes_table_live_rows{table="${t.name}"} ${t.live_rows}`)
      out.push('# HELP processes_table_dead_rows Dead tuples per table, waiting for vacuum.')
      out.push('# TYPE processes_table_dead_rows gauge')
      for (const t of this.sample.tables) out.push(`processes_table_dead_rows{table="${t.name}"} ${t.dead_rows}`)
      out.push('# HELP processes_oldest_pending_seconds How long the oldest claimable pending process has waited.')
      out.push('# TYPE processes_oldest_pending_seconds gauge', `processes_oldest_pending_seconds ${this.sample.oldest_pending_s.toFixed(3)}`)
    }
    const r = this.retention
    if (!r) return
    out.push('# HELP processes_retention_partitions_dropped_total Partitions retention dropped, per table (this instance).')
    out.push('# TYPE processes_retention_partitions_dropped_total counter')
    for (const [table, n] of Object.entries(r.partitions_dropped)) out.push(`processes_retention_partitions_dropped_total{table="${table}"} ${n}`)
    out.push('# HELP processes_retention_partitions_created_total Partitions retention created ahead, per table (this instance).')
    out.push('# TYPE processes_retention_partitions_created_total counter')
    for (const [table, n] of Object.entries(r.partitions_created)) out.push(`processes_retention_partitions_created_total{table="${table}"} ${n}`)
    out.push('# HELP processes_retention_rows_pruned_total Rows retention removed, per table (partition drops counted by their row estimate).')
    out.push('# TYPE processes_retention_rows_pruned_total counter')
    for (const [table, n] of Object.entries(r.rows_dropped)) out.push(`processes_retention_rows_pruned_total{table="${table}"} ${n}`)
    out.push(`processes_retention_rows_pruned_total{table="processes"} ${r.processes_deleted}`)
    out.push(`processes_retention_rows_pruned_total{table="idempotency_keys"} ${r.idempotency_keys_deleted}`)
    out.push('# TYPE processes_retention_passes_total counter', `processes_retention_passes_total ${r.passes}`)
    out.push('# TYPE processes_retention_errors_total counter', `processes_retention_errors_total ${r.errors}`)
    out.push('# HELP processes_retention_vacuums_total Vacuums retention ran itself, where no autovacuum runs.')
    out.push('# TYPE processes_retention_vacuums_total counter', `processes_retention_vacuums_total ${r.vacuums}`)
    out.push('# HELP processes_retention_vacuum_seconds_total Time those vacuums (and their analyzes, at most one a minute) took.')
    out.push('# TYPE processes_retention_vacuum_seconds_total counter', `processes_retention_vacuum_seconds_total ${r.vacuum_seconds.toFixed(3)}`)
  }
}

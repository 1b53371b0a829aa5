// bench soak: N jobs through the real server with retention set very short, to show storage and
// claim latency stay flat while finished processes, events and audit rows are pruned during the run.
// The load (tests/bench/load/soak-load.ts, a process of its own): bulk create, 1,000 a request, kept at most
// BENCH_SOAK_BACKLOG ahead of the workers; SDK workers (batch claim, claim-next), a few awaited progress
// updates each; a probe worker timing a `claim {max:1, wait_ms:0}` round trip every BENCH_SOAK_PROBE_MS; a reader making
// audit rows. This process samples the catalog every few seconds (sampleStorage: partitions summed into
// their table) and the server's /metrics (retention totals). The comparison (first tenth vs last tenth)
// starts after a warm-up long enough for retention to reach its steady state.
// Sizes: BENCH_SOAK_JOBS (default 1,000,000), BENCH_SOAK_BACKLOG (20,000), BENCH_SOAK_RETENTION_DAYS (0.0003
// ≈ 26 s, for processes, events and audit), BENCH_SOAK_PARTITION_MS (60,000), BENCH_SOAK_PROGRESS (3),
// BENCH_SOAK_PROBE_MS (100). Each sample also reads pgstatindex of the claim index, to tell its bloat from the machine.
// Vacuum is the server's own business (autovacuum, or retention's vacuum where none runs): the benchmark does none.
import { loadavg } from 'node:os'
import { sampleStorage } from '../src/db/retention'
import type { StorageSample } from '../src/ops/metrics'
import { BENCH_DIR, BUN, Report, createBenchTenant, freshDatabase, postgresCpuSeconds, procStat, scrapeMetrics, spawnChild, startProcessesServer } from './lib'

const env = process.env
const JOBS = Number(env.BENCH_SOAK_JOBS ?? 1_000_000)
const BACKLOG = Number(env.BENCH_SOAK_BACKLOG ?? 20_000)
const RETENTION_DAYS = Number(env.BENCH_SOAK_RETENTION_DAYS ?? 0.0003)
const PARTITION_MS = Number(env.BENCH_SOAK_PARTITION_MS ?? 60_000)
const RETENTION_INTERVAL_MS = Number(env.BENCH_SOAK_RETENTION_INTERVAL_MS ?? 5000)
const PROGRESS = Number(env.BENCH_SOAK_PROGRESS ?? 3)
const PROBE_MS = Number(env.BENCH_SOAK_PROBE_MS ?? 100)
const SAMPLE_MS = 3000
const WORKERS = 2
const CONCURRENCY = 100
const TABLES = ['processes', 'process_events', 'audit_log'] as const

interface Sample {
  t: number
  done: number
  created: number
  tables: Record<string, { bytes: number; live_rows: number; dead_rows: number }>
  /** The server's resident memory and CPU seconds so far, and the machine's 1-minute load: what else drifts. */
  /** The claim index (pgstatindex): its size, leaf density and deleted pages. */
  claim_index: { bytes: number; leaf_density: number; deleted_pages: number }
  server_rss: number
  server_cpu_s: number
  load: number
}

const quantile = (xs: number[], q: number) => {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(s.length * q) - 1))]!
}

export async function run(): Promise<Report> {
  const retentionMs = RETENTION_DAYS * 86_400_000
  // Partitions go only when their whole range is past retention: the first drop comes up to one partition
  // width (plus a pass) after the retention window; after that the tables only saw-tooth.
  const warmupS = (retentionMs + PARTITION_MS + 2 * RETENTION_INTERVAL_MS) / 1000
  const report = new Report('soak', {
    jobs: JOBS,
    backlog: BACKLOG,
    retention_days: RETENTION_DAYS,
    partition_ms: PARTITION_MS,
    retention_interval_ms: RETENTION_INTERVAL_MS,
    progress_per_job: PROGRESS,
    workers: WORKERS,
    concurrency: CONCURRENCY,
    warmup_s: warmupS,
    probe_ms: PROBE_MS,
  })
  const { url, db } = await freshDatabase(2)
  const tenant = await createBenchTenant(db)
  const days = String(RETENTION_DAYS)
  const server = await startProcessesServer('processes', {
    DATABASE_URL: url,
    DB_POOL_MAX: '20',
    RETENTION_DAYS: days,
    EVENT_RETENTION_DAYS: days,
    AUDIT_RETENTION_DAYS: days,
    PARTITION_INTERVAL_MS: String(PARTITION_MS),
    RETENTION_INTERVAL_MS: String(RETENTION_INTERVAL_MS),
  })

  // The first retention pass replaces the migration's empty days with PARTITION_MS-wide partitions; a row
  // written before it would keep today's day partition (and everything in it) until tomorrow.
  const passed = Date.now() + 60_000
  while ((await scrapeMetrics(server.metricsUrl)).processes_retention_passes_total! < 1) {
    if (Date.now() > passed) throw new Error('no retention pass within 60 s')
    await Bun.sleep(100)
  }
  const load = spawnChild('soak-load', [BUN, `${BENCH_DIR}load/soak-load.ts`], {
    BENCH_SOAK: JSON.stringify({
      url: server.url,
      token: tenant.token,
      workerToken: tenant.workerToken,
      jobs: JOBS,
      backlog: BACKLOG,
      concurrency: CONCURRENCY,
      workers: WORKERS,
      progressFrames: PROGRESS,
      readEveryMs: 50,
      probeEveryMs: PROBE_MS,
    }),
  })
  await db.sql`create extension if not exists pgstattuple`
  // pgstatindex can be picked as a deadlock's victim against the server's own vacuum: that sample keeps the last reading.
  let lastIndex = { bytes: NaN, leaf_density: NaN, deleted_pages: NaN }
  let indexErrors = 0
  const claimIndex = async () => {
    try {
      const [r] = await db.sql<{ bytes: string; leaf_density: number; deleted_pages: string }[]>`
        select index_size as bytes, avg_leaf_density as leaf_density, deleted_pages from pgstatindex('processes_claim_idx')`
      lastIndex = { bytes: Number(r!.bytes), leaf_density: Number(r!.leaf_density), deleted_pages: Number(r!.deleted_pages) }
    } catch (error) {
      indexErrors++
      if (indexErrors === 1) console.log(`  pgstatindex failed (kept the last reading): ${String(error)}`)
    }
    return lastIndex
  }
  const autovacuum = (await db.sql<{ autovacuum: string }[]>`show autovacuum`)[0]!.autovacuum === 'on'
  const cpu0 = { server: procStat(server.pid).cpuSeconds, postgres: postgresCpuSeconds() }
  const started = performance.now()
  const samples: Sample[] = []
  const probes: Array<{ t: number; ms: number }> = []
  let consumed = 0
  let final: any = null
  let lastPrint = 0
  while (!final) {
    await Bun.sleep(SAMPLE_MS)
    if (load.proc.exitCode !== null && !load.messages.some((m) => m.final))
      throw new Error(`soak-load exited (${load.proc.exitCode}):\n${load.output().slice(-3000)}`)
    let latest: any = null
    for (; consumed < load.messages.length; consumed++) {
      const m = load.messages[consumed]
      for (const ms of m.probe_ms ?? []) probes.push({ t: m.t, ms })
      latest = m
      if (m.final) final = m
    }
    // The catalog read races the server's partition drops and vacuum: a deadlock's victim is tried again next sample.
    const s: StorageSample | null = await sampleStorage(db.sql).catch((error) => {
      console.log(`  storage sample skipped: ${String(error)}`)
      return null
    })
    if (s === null) continue
    const t = (performance.now() - started) / 1000
    const proc = procStat(server.pid)
    samples.push({
      t,
      done: latest?.done ?? samples.at(-1)?.done ?? 0,
      created: latest?.created ?? samples.at(-1)?.created ?? 0,
      tables: Object.fromEntries(s.tables.map((x) => [x.name, { bytes: Number(x.bytes), live_rows: Number(x.live_rows), dead_rows: Number(x.dead_rows) }])),
      claim_index: await claimIndex(),
      server_rss: proc.rssBytes,
      server_cpu_s: proc.cpuSeconds,
      load: loadavg()[0]!,
    })
    if (t - lastPrint >= 30) {
      lastPrint = t
      const last = samples.at(-1)!
      console.log(
        `  ${t.toFixed(0)} s: done ${last.done.toLocaleString('en')} / ${JOBS.toLocaleString('en')}, pending ${(last.created - last.done).toLocaleString('en')}, ${TABLES.map((n) => `${n} ${(last.tables[n]!.bytes / 2 ** 20).toFixed(1)} MiB (${last.tables[n]!.live_rows} live, ${last.tables[n]!.dead_rows} dead)`).join(', ')}`,
      )
    }
  }
  const seconds = (performance.now() - started) / 1000
  const cpu = { server: procStat(server.pid).cpuSeconds - cpu0.server, postgres: postgresCpuSeconds() - cpu0.postgres }
  const metrics = await scrapeMetrics(server.metricsUrl)
  const metricsText = await (await fetch(server.metricsUrl)).text()
  const labelled = (name: string, table: string) => Number(new RegExp(`^${name}\\{table="${table}"\\} (\\S+)$`, 'm').exec(metricsText)?.[1] ?? NaN)

  report.add({ figure: 'jobs/s overall (create, claim, progress, complete)', value: JOBS / seconds, unit: 'jobs/s' })
  // Until the creator's last batch: after it the backlog drains and the load is not the steady one any more.
  const createdAll = samples.find((s) => s.created >= JOBS)?.t ?? Infinity
  const measured = samples.filter((s) => s.t >= warmupS && s.t <= createdAll)
  if (measured.length < 20) {
    report.note(
      `the run (${seconds.toFixed(0)} s) was too short for a comparison after the ${warmupS.toFixed(0)} s warm-up: ${measured.length} samples; run more jobs`,
    )
  } else {
    const span = measured.at(-1)!.t - measured[0]!.t
    const firstEnd = measured[0]!.t + span / 10
    const lastStart = measured.at(-1)!.t - span / 10
    const first = measured.filter((s) => s.t <= firstEnd)
    const last = measured.filter((s) => s.t >= lastStart)
    for (const name of TABLES) {
      const peak = (xs: Sample[]) => Math.max(...xs.map((s) => s.tables[name]!.bytes))
      const a = peak(first)
      const b = peak(last)
      report.add({
        figure: `${name} bytes, peak in last tenth (vs first)`,
        value: b / 2 ** 20,
        unit: 'MiB',
        ceiling: a / 2 ** 20,
        ceilingLabel: 'first tenth',
        ratio: b / a,
        goal: '≤ 1.2×',
        pass: b / a <= 1.2,
      })
    }
    const probeIn = (from: number, to: number) => probes.filter((p) => p.t >= from && p.t <= to).map((p) => p.ms)
    const pf = probeIn(measured[0]!.t, firstEnd)
    const pl = probeIn(lastStart, measured.at(-1)!.t)
    for (const [q, label] of [
      [0.5, 'p50'],
      [0.99, 'p99'],
    ] as const) {
      const a = quantile(pf, q)
      const b = quantile(pl, q)
      report.add({
        figure: `claim round trip ${label}, last tenth (vs first)`,
        value: b,
        unit: 'ms',
        ceiling: a,
        ceilingLabel: 'first tenth',
        ratio: b / a,
        goal: '≤ 1.2×',
        pass: b / a <= 1.2,
      })
    }
    report.note(
      `tenths of the measured span: ${span.toFixed(0)} s after a ${warmupS.toFixed(0)} s warm-up (retention window + one partition width + two passes), until the last batch was created; first tenth ${pf.length} probes, last tenth ${pl.length}; table bytes are the peak of the tenth's samples (they saw-tooth with each partition drop)`,
    )
    const jobsIn = (xs: Sample[]) => (xs.at(-1)!.done - xs[0]!.done) / Math.max(1, xs.at(-1)!.t - xs[0]!.t)
    // Rows kept for the retention window grow with the rate: bytes per live row tells bloat from a faster run.
    const perRow = (xs: Sample[], name: string) =>
      xs.reduce((n, s) => n + s.tables[name]!.bytes, 0) /
      Math.max(
        1,
        xs.reduce((n, s) => n + s.tables[name]!.live_rows, 0),
      )
    // A drift of the claim round trip is the code's only if the server's cost per job or its memory drift too.
    const cpuPerJob = (xs: Sample[]) => ((xs.at(-1)!.server_cpu_s - xs[0]!.server_cpu_s) * 1000) / Math.max(1, xs.at(-1)!.done - xs[0]!.done)
    const mean = (xs: Sample[], f: (s: Sample) => number) => xs.reduce((n, s) => n + f(s), 0) / xs.length
    report.note(
      `first / last tenth: server CPU per job ${cpuPerJob(first).toFixed(3)} / ${cpuPerJob(last).toFixed(3)} ms, server RSS ${(mean(first, (s) => s.server_rss) / 2 ** 20).toFixed(0)} / ${(mean(last, (s) => s.server_rss) / 2 ** 20).toFixed(0)} MiB, machine load average ${mean(first, (s) => s.load).toFixed(1)} / ${mean(last, (s) => s.load).toFixed(1)} (${Math.min(...samples.map((s) => s.load)).toFixed(1)}–${Math.max(...samples.map((s) => s.load)).toFixed(1)} over the run)`,
    )
    const idx = (xs: Sample[]) =>
      `${(Math.max(...xs.map((s) => s.claim_index.bytes)) / 2 ** 10).toFixed(0)} KiB peak, leaf density ${mean(xs, (s) => s.claim_index.leaf_density).toFixed(0)} %, ${Math.max(...xs.map((s) => s.claim_index.deleted_pages))} deleted pages`
    report.note(`claim index (pgstatindex) first tenth: ${idx(first)}; last tenth: ${idx(last)} (${indexErrors} readings failed)`)
    report.note(
      `jobs/s in the first tenth ${jobsIn(first).toFixed(0)}, in the last ${jobsIn(last).toFixed(0)}; bytes per live row (mean over the tenth) first / last: ${TABLES.map((n) => `${n} ${perRow(first, n).toFixed(0)} / ${perRow(last, n).toFixed(0)}`).join(', ')}`,
    )
  }
  const pruned = {
    processes: metrics.processes_retention_rows_pruned_total === undefined ? NaN : labelled('processes_retention_rows_pruned_total', 'processes'),
    process_events: labelled('processes_retention_rows_pruned_total', 'process_events'),
    audit_log: labelled('processes_retention_rows_pruned_total', 'audit_log'),
  }
  const dropped = {
    process_events: labelled('processes_retention_partitions_dropped_total', 'process_events'),
    audit_log: labelled('processes_retention_partitions_dropped_total', 'audit_log'),
  }
  report.add({ figure: 'processes pruned (rows)', value: pruned.processes, unit: 'rows' })
  report.add({ figure: 'process_events pruned (rows, estimate of dropped partitions)', value: pruned.process_events, unit: 'rows' })
  report.add({ figure: 'audit_log pruned (rows, estimate of dropped partitions)', value: pruned.audit_log, unit: 'rows' })
  report.add({ figure: 'partitions dropped (process_events + audit_log)', value: dropped.process_events + dropped.audit_log, unit: '' })
  report.add({
    figure: 'retention errors',
    value: metrics.processes_retention_errors_total ?? NaN,
    unit: '',
    goal: '0',
    pass: metrics.processes_retention_errors_total === 0,
  })
  report.add({ figure: 'load generator errors', value: final.errors, unit: '', goal: '0', pass: final.errors === 0 })
  const end = samples.at(-1)!
  const maxDead = Math.max(...samples.map((s) => s.tables.processes!.dead_rows))
  report.note(
    `${autovacuum ? 'autovacuum is on' : `autovacuum is off on this Postgres: the server's retention vacuumed processes and idempotency_keys itself ${metrics.processes_retention_vacuums_total ?? NaN} times, ${(metrics.processes_retention_vacuum_seconds_total ?? NaN).toFixed(0)} s in all`}; processes' dead rows peaked at ${maxDead.toLocaleString('en')}`,
  )
  report.note(
    `claim round trip: a probe worker's \`claim {max:1, wait_ms:0}\` on its own socket, send → \`claimed\`, every ${PROBE_MS} ms (${probes.length} probes)`,
  )
  report.note(
    `at the end: ${TABLES.map((n) => `${n} ${(end.tables[n]!.bytes / 2 ** 20).toFixed(1)} MiB, ${end.tables[n]!.live_rows.toLocaleString('en')} live / ${end.tables[n]!.dead_rows.toLocaleString('en')} dead rows`).join('; ')}`,
  )
  report.note(
    `CPU over the run: server ${(cpu.server / seconds).toFixed(2)} cores, Postgres (all of it, shared machine) ${(cpu.postgres / seconds).toFixed(2)} cores; ${seconds.toFixed(0)} s`,
  )
  if (final.error_samples?.length) report.note(`load errors: ${final.error_samples.join(' | ')}`)
  report.data.samples = samples
  report.data.probes = probes
  report.data.final = final
  report.data.dropped = dropped
  report.data.pruned = pruned
  return report
}

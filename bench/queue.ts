// bench queue: this server against pg-boss, graphile-worker and BullMQ on the same workload, in
// one interleaved run (round after round, each queue in turn): N jobs enqueued first, then one worker with
// concurrency 50 times from its start to the last job done — with 5 progress updates per job (awaited: this
// server and BullMQ, the two that have progress) and without (all four). Also: bulk enqueue through
// POST /processes/batch, the claim's cost at 0 and at 1M finished rows, and a noisy neighbour (workspace B's
// pickup while A holds 50,000 pending). The reference queues run under Node (bench/queue/reference.mjs),
// each on a database of its own; BullMQ on the shared Redis under a prefix of its own, removed after.
// Smaller runs: BENCH_QUEUE_JOBS (default 10000), BENCH_QUEUE_ROUNDS (2), BENCH_QUEUE_FINISHED (1000000),
// BENCH_QUEUE_BACKLOG (50000). The Python worker SDK runs the "with progress" workload too (bench/queue/python.ts).
import { connectWorker } from '../packages/client/src/worker'
import { claimNext } from '../src/processes/queries/claims'
import { insertProcess } from '../src/processes/queries/create'
import { BASE_REDIS_URL, BENCH_DIR, Report, createBenchTenant, freshDatabase, redisPrefix, startProcessesServer, cleanRedisPrefix } from './lib'
import { awaitedAcks, type Cpu, cpuNow, cpuSince, cpuTotal, createToDone, quantile, referencePart, singleCreates } from './queue/hot-path'
import { addPythonRow, PYTHON, pythonWorkerRun } from './queue/python'

const env = process.env
const JOBS = Number(env.BENCH_QUEUE_JOBS ?? 10_000)
const ROUNDS = Number(env.BENCH_QUEUE_ROUNDS ?? 2)
const FINISHED = Number(env.BENCH_QUEUE_FINISHED ?? 1_000_000)
const BACKLOG = Number(env.BENCH_QUEUE_BACKLOG ?? 50_000)
const CONCURRENCY = 50
/** Single creates (POST /processes vs queue.add), creates followed to done, and awaited progress updates on one process. */
const SINGLE = Number(env.BENCH_QUEUE_SINGLE ?? 20_000)
const DONE_JOBS = Number(env.BENCH_QUEUE_DONE ?? 2000)
const ACKS = Number(env.BENCH_QUEUE_ACKS ?? 20_000)
const IN_FLIGHT = 50
const DONE_IN_FLIGHT = 20
/** pg-boss takes one batch per polling interval (0.5 s at least): ~100 jobs/s here, so it gets a fifth of the jobs. */
const PG_BOSS_JOBS = Math.max(500, Math.floor(JOBS / 5))

type Lib = 'processes' | 'bullmq' | 'graphile-worker' | 'pg-boss'

/** A reference queue's jobs/s and the CPU per job of every process (its node process, Redis, Postgres). */
async function reference(lib: Exclude<Lib, 'processes'>, jobs: number, progress: boolean): Promise<{ rate: number; cpu: Cpu }> {
  const { url } = await freshDatabase(1)
  const prefix = redisPrefix()
  cleanRedisPrefix(BASE_REDIS_URL, prefix)
  const proc = Bun.spawn(['node', `${BENCH_DIR}queue/reference.mjs`, lib, String(jobs), progress ? '1' : '0', String(CONCURRENCY)], {
    env: { ...process.env, DATABASE_URL: url, REDIS_URL: BASE_REDIS_URL, PREFIX: prefix.replace(/:$/, '') },
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const before = cpuNow()
  const [out, err] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()])
  await proc.exited
  const spent = cpuSince(before, cpuNow())
  const usage = proc.resourceUsage()
  const cpu = { server: usage ? Number(usage.cpuTime.total) / 1e6 : NaN, postgres: spent.postgres, redis: spent.redis, client: 0 }
  const last = out.trim().split('\n').pop() ?? ''
  try {
    return { rate: JSON.parse(last).jobs_per_s, cpu: perJob(cpu, jobs) }
  } catch {
    throw new Error(`${lib} failed (exit ${proc.exitCode}):\n${out.slice(-2000)}\n${err.slice(-2000)}`)
  }
}

export async function run(): Promise<Report> {
  const report = new Report('queue', {
    jobs: JOBS,
    rounds: ROUNDS,
    concurrency: CONCURRENCY,
    pg_boss_jobs: PG_BOSS_JOBS,
    finished_rows: FINISHED,
    backlog: BACKLOG,
  })
  const { url, db } = await freshDatabase(4)
  const tenant = await createBenchTenant(db)
  const server = await startProcessesServer('processes', { DATABASE_URL: url, DB_POOL_MAX: '20' })
  const auth = { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' }

  const enqueueRates: number[] = []
  async function enqueue(type: string, count: number) {
    const started = performance.now()
    for (let i = 0; i < count; i += 1000) {
      const processes = Array.from({ length: Math.min(1000, count - i) }, (_, k) => ({ type, metadata: { n: i + k } }))
      const response = await fetch(`${server.url}/processes/batch`, { method: 'POST', headers: auth, body: JSON.stringify({ processes }) })
      if (response.status !== 201) throw new Error(`batch create: ${response.status} ${await response.text()}`)
    }
    enqueueRates.push(count / ((performance.now() - started) / 1000))
  }

  let seq = 0
  /** jobs/s of this server, and the CPU per job (enqueue and processing) of the server, Postgres and the worker. */
  async function ours(progress: boolean): Promise<{ rate: number; cpu: Cpu }> {
    const type = `bench_${seq++}`
    const before = cpuNow(server.pid)
    await enqueue(type, JOBS)
    let done = 0
    const { promise, resolve } = Promise.withResolvers<void>()
    const started = performance.now()
    const worker = connectWorker(server.url, tenant.workerToken, {
      types: [type],
      concurrency: CONCURRENCY,
      claimWaitMs: 1000,
      async handler(_process, ctx) {
        if (progress) for (let p = 1; p <= 5; p++) await ctx.progress(p * 20)
      },
      onEvent: (event) => {
        if (event.type === 'completed' && ++done === JOBS) resolve()
      },
    })
    await promise
    const seconds = (performance.now() - started) / 1000
    const cpu = perJob(cpuSince(before, cpuNow(server.pid)), JOBS)
    await worker.close()
    return { rate: JOBS / seconds, cpu }
  }

  /** The same run with the Python worker SDK (bench/queue/python.ts). */
  async function python(): Promise<{ rate: number; cpu: Cpu }> {
    const type = `bench_${seq++}`
    const before = cpuNow(server.pid)
    await enqueue(type, JOBS)
    return pythonWorkerRun(server, tenant.workerToken, type, JOBS, CONCURRENCY, before)
  }

  const results: Record<string, number[]> = {}
  const cpus: Record<string, Cpu[]> = {}
  const record = (key: string, run: number | { rate: number; cpu: Cpu }) => {
    if (typeof run === 'number') return (results[key] ??= []).push(run)
    ;(cpus[key] ??= []).push(run.cpu)
    return (results[key] ??= []).push(run.rate)
  }
  for (let round = 0; round < ROUNDS; round++) {
    record('processes with progress', await ours(true))
    if (PYTHON) record('python worker with progress', await python())
    record('bullmq with progress', await reference('bullmq', JOBS, true))
    record('processes without progress', await ours(false))
    record('graphile-worker without progress', await reference('graphile-worker', JOBS, false))
    record('bullmq without progress', await reference('bullmq', JOBS, false))
    record('pg-boss without progress', await reference('pg-boss', PG_BOSS_JOBS, false))
    // The hot path's other figures, interleaved the same way.
    record('processes single creates', await singleCreates(server.url, tenant, SINGLE, IN_FLIGHT))
    record('bullmq queue.add', (await referencePart('bullmq-add', SINGLE, IN_FLIGHT)).rate!)
    {
      const type = `done_${round}`
      const worker = connectWorker(server.url, tenant.workerToken, { types: [type], concurrency: CONCURRENCY, claimWaitMs: 1000, handler: async () => {} })
      const latencies = await createToDone(server.url, tenant, type, DONE_JOBS, DONE_IN_FLIGHT)
      await worker.close()
      record('processes create → done p99', quantile(latencies, 0.99))
      record('processes create → done p50', quantile(latencies, 0.5))
    }
    const bullDone = await referencePart('bullmq-done', DONE_JOBS, DONE_IN_FLIGHT)
    record('bullmq add → completed p99', bullDone.p99!)
    record('bullmq add → completed p50', bullDone.p50!)
    const acks = await awaitedAcks(server.url, tenant, ACKS)
    record('processes awaited progress acks', acks.rate)
    record('processes progress commits per 100 frames', acks.commitsPer100)
    record('bullmq awaited updateProgress', (await referencePart('bullmq-acks', ACKS)).rate!)
    console.log(
      `  round ${round + 1}/${ROUNDS}: ${Object.entries(results)
        .map(([k, v]) => `${k} ${Math.round(v.at(-1)!)}`)
        .join(', ')}`,
    )
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  const m = Object.fromEntries(Object.entries(results).map(([k, v]) => [k, median(v)]))
  report.data.rounds = results

  const withP = m['processes with progress']!
  const withoutP = m['processes without progress']!
  report.add({
    figure: 'jobs/s with 5 progress updates (vs BullMQ)',
    value: withP,
    unit: 'jobs/s',
    ceiling: m['bullmq with progress'],
    ceilingLabel: 'BullMQ',
    ratio: withP / m['bullmq with progress']!,
    goal: '≥ 1.0×',
    pass: withP >= m['bullmq with progress']!,
  })
  report.add({
    figure: 'jobs/s without progress (vs graphile-worker)',
    value: withoutP,
    unit: 'jobs/s',
    ceiling: m['graphile-worker without progress'],
    ceilingLabel: 'graphile-worker',
    ratio: withoutP / m['graphile-worker without progress']!,
    goal: '≥ 1.0×',
    pass: withoutP >= m['graphile-worker without progress']!,
  })
  report.add({
    figure: 'jobs/s without progress (vs BullMQ)',
    value: withoutP,
    unit: 'jobs/s',
    ceiling: m['bullmq without progress'],
    ceilingLabel: 'BullMQ',
    ratio: withoutP / m['bullmq without progress']!,
  })
  report.add({
    figure: 'jobs/s without progress (vs pg-boss)',
    value: withoutP,
    unit: 'jobs/s',
    ceiling: m['pg-boss without progress'],
    ceilingLabel: 'pg-boss',
    ratio: withoutP / m['pg-boss without progress']!,
  })
  const single = m['processes single creates']!
  report.add({
    figure: `single POST /processes, ${IN_FLIGHT} in flight (vs BullMQ queue.add)`,
    value: single,
    unit: 'creates/s',
    ceiling: m['bullmq queue.add'],
    ceilingLabel: 'BullMQ add',
    ratio: single / m['bullmq queue.add']!,
    goal: '≥ 1.0×',
    pass: single >= m['bullmq queue.add']!,
  })
  const doneP99 = m['processes create → done p99']!
  report.add({
    figure: `create → SSE done p99, ${DONE_IN_FLIGHT} in flight (vs BullMQ QueueEvents completed)`,
    value: doneP99,
    unit: 'ms',
    ceiling: m['bullmq add → completed p99'],
    ceilingLabel: 'BullMQ',
    ratio: doneP99 / m['bullmq add → completed p99']!,
    goal: '≤ 1.0×',
    pass: doneP99 <= m['bullmq add → completed p99']!,
  })
  report.add({
    figure: 'create → SSE done p50',
    value: m['processes create → done p50']!,
    unit: 'ms',
    ceiling: m['bullmq add → completed p50'],
    ceilingLabel: 'BullMQ',
    ratio: m['processes create → done p50']! / m['bullmq add → completed p50']!,
  })
  const acksRate = m['processes awaited progress acks']!
  report.add({
    figure: 'awaited progress acks/s, one process (vs BullMQ updateProgress)',
    value: acksRate,
    unit: 'acks/s',
    ceiling: m['bullmq awaited updateProgress'],
    ceilingLabel: 'BullMQ',
    ratio: acksRate / m['bullmq awaited updateProgress']!,
    goal: '≥ 1.0×',
    pass: acksRate >= m['bullmq awaited updateProgress']!,
  })
  const commits = m['processes progress commits per 100 frames']!
  report.add({ figure: 'Postgres progress statements per 100 awaited frames', value: commits, unit: '', goal: '≤ 5', pass: commits <= 5 })
  // CPU per job, every process that takes part (medians of the rounds, per process).
  const cpuMedian = (key: string): Cpu | null => {
    const runs = cpus[key]
    if (!runs || runs.length === 0) return null
    const pick = (f: keyof Cpu) => median(runs.map((c) => c[f]))
    return { server: pick('server'), postgres: pick('postgres'), redis: pick('redis'), client: pick('client') }
  }
  addPythonRow(report, m, cpuMedian('python worker with progress'))
  for (const [key, label] of [
    ['processes with progress', 'this server, 5 progress'],
    ['processes without progress', 'this server, no progress'],
    ['bullmq with progress', 'BullMQ, 5 progress'],
    ['bullmq without progress', 'BullMQ, no progress'],
  ] as const) {
    const c = cpuMedian(key)
    if (!c) continue
    const ours = key.startsWith('processes')
    const total = cpuTotal(c)
    report.add({
      figure: `CPU per job (enqueue + processing), ${label}`,
      value: total,
      unit: 'ms',
      ...(ours ? { goal: '≤ 0.5', pass: total <= 0.5 } : {}),
    })
    report.note(
      `CPU per job, ${label}: ${ours ? `server ${c.server.toFixed(3)}, Postgres ${c.postgres.toFixed(3)}, worker SDK and enqueue ${c.client.toFixed(3)}, Redis ${c.redis.toFixed(3)}` : `node (queue + worker) ${c.server.toFixed(3)}, Redis ${c.redis.toFixed(3)}, Postgres ${c.postgres.toFixed(3)}`} ms`,
    )
  }
  const enqueueRate = median(enqueueRates)
  report.add({
    figure: 'bulk enqueue (POST /processes/batch, 1,000 a request)',
    value: enqueueRate,
    unit: 'jobs/s',
    goal: '≥ 10,000',
    pass: enqueueRate >= 10_000,
  })

  // Claim cost at 0 and at FINISHED finished rows: one pending process claimed at a time, in a transaction each.
  {
    const { db: cdb } = await freshDatabase(2)
    const t = await createBenchTenant(cdb)
    const time = async () => {
      for (let i = 0; i < 300; i++) await insertProcess(cdb.sql, { workspaceId: t.workspaceId, createdBy: null, type: 'cost', metadata: {} })
      const started = performance.now()
      for (let i = 0; i < 300; i++) await cdb.sql.begin((tx) => claimNext(tx, { workerId: 'cost', types: ['cost'], max: 1 }))
      return (performance.now() - started) / 300
    }
    await time() // warm
    const atZero = await time()
    await cdb.sql`
      insert into processes (workspace_id, type, status, progress, message, attempts, started_at, finished_at)
      select ${t.workspaceId}, 'cost', 'completed', 100, 'Completed', 1, now(), now() from generate_series(1, ${FINISHED})`
    await cdb.sql`analyze processes`
    const atMany = await time()
    report.add({
      figure: `claim cost at ${FINISHED.toLocaleString('en')} finished rows (vs 0)`,
      value: atMany,
      unit: 'ms',
      ceiling: atZero,
      ceilingLabel: '0 finished',
      ratio: atMany / atZero,
      goal: '≤ 1.2×',
      pass: atMany / atZero <= 1.2,
    })
  }

  // Noisy neighbour: A holds BACKLOG pending; B creates one process every 100 ms while a worker drains.
  {
    const b = await createBenchTenant(db)
    await db.sql`insert into processes (workspace_id, type, message) select ${tenant.workspaceId}, 'noisy', 'Queued' from generate_series(1, ${BACKLOG})`
    const worker = connectWorker(server.url, tenant.workerToken, { types: ['noisy'], concurrency: CONCURRENCY, claimWaitMs: 1000, handler: async () => {} })
    const ids: number[] = []
    for (let i = 0; i < 80; i++) {
      const response = await fetch(`${server.url}/processes`, {
        method: 'POST',
        headers: { authorization: `Bearer ${b.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'noisy' }),
      })
      ids.push(((await response.json()) as { id: number }).id)
      await Bun.sleep(100)
    }
    const deadline = Date.now() + 30_000
    let rows: { ms: number | null }[] = []
    while (Date.now() < deadline) {
      rows = await db.sql<{ ms: number | null }[]>`
        select extract(epoch from (started_at - created_at)) * 1000 as ms from processes where id = any(${ids}::bigint[])`
      if (rows.every((r) => r.ms !== null)) break
      await Bun.sleep(200)
    }
    await worker.close({ timeoutMs: 5000 })
    const pickups = rows.map((r) => (r.ms === null ? Infinity : Number(r.ms))).sort((x, y) => x - y)
    const p99 = pickups[Math.min(pickups.length - 1, Math.ceil(pickups.length * 0.99) - 1)]!
    const left = (
      await db.sql<
        { n: number }[]
      >`select count(*)::int as n from processes where type = 'noisy' and status = 'pending' and workspace_id = ${tenant.workspaceId}`
    )[0]!.n
    report.add({
      figure: `noisy neighbour: B's pickup p99 while A holds ${BACKLOG.toLocaleString('en')} pending`,
      value: p99,
      unit: 'ms',
      goal: '≤ 1,000',
      pass: p99 <= 1000,
    })
    report.note(
      `noisy neighbour: B's pickup p50 ${Math.round(pickups[Math.floor(pickups.length / 2)]!)} ms; A still had ${left.toLocaleString('en')} pending at the end`,
    )
  }
  report.note(
    `medians of ${ROUNDS} interleaved rounds; every queue gets one worker with concurrency ${CONCURRENCY} (graphile-worker and pg-boss otherwise at their defaults; pg-boss batchSize ${CONCURRENCY}, pollingIntervalSeconds 0.5, its minimum, and ${PG_BOSS_JOBS.toLocaleString('en')} jobs — it takes one batch per polling interval)`,
  )
  report.note(
    'this server: the worker SDK (packages/client/src/worker.ts) in the benchmark process, awaiting each ctx.progress; BullMQ awaits each job.updateProgress',
  )
  report.note(
    `single creates: ${SINGLE.toLocaleString('en')} each, ${IN_FLIGHT} lanes of one request at a time (fetch from this process vs queue.add under node); create → done: ${DONE_JOBS.toLocaleString('en')} jobs, ${DONE_IN_FLIGHT} lanes, a worker with concurrency ${CONCURRENCY} running (POST, then the process's SSE stream until event: done, vs queue.add then QueueEvents' completed); acks: ${ACKS.toLocaleString('en')} awaited updates on one process`,
  )
  return report
}

/** CPU seconds over a run as milliseconds per job. */
function perJob(c: Cpu, jobs: number): Cpu {
  const f = 1000 / jobs
  return { server: c.server * f, postgres: c.postgres * f, redis: c.redis * f, client: c.client * f }
}

// Disk per load (README "Disk per load"): bytes on real Postgres per finished process with its events, per
// audit row. A fresh database and server; N processes created in batches, each claimed by the SDK worker,
// 5 awaited progress updates and one `log`, completed with a small result_summary; each read once by
// GET /processes/{id}. Then VACUUM (ANALYZE) and exact counts: table bytes (indexes and partitions in) over
// rows; and processes again after VACUUM FULL (compacted). Not registered in run.ts: `npx bun bench/disk.ts [N]`.
import { connectWorker } from '../packages/client/src/worker'
import { cleanupAll, createBenchTenant, freshDatabase, startProcessesServer } from './lib'

const N = Number(process.argv[2] ?? 20_000)
try {
  const { url, db } = await freshDatabase(2)
  const tenant = await createBenchTenant(db)
  const server = await startProcessesServer('processes', { DATABASE_URL: url, DB_POOL_MAX: '10' })
  const auth = { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' }
  const ids: number[] = []
  for (let i = 0; i < N; i += 1000) {
    const processes = Array.from({ length: Math.min(1000, N - i) }, (_, k) => ({ type: 'csv_import', metadata: { file: `upload-${i + k}.csv`, rows: 200 } }))
    const r = await fetch(`${server.url}/processes/batch`, { method: 'POST', headers: auth, body: JSON.stringify({ processes }) })
    ids.push(...((await r.json()) as { processes: { id: number }[] }).processes.map((p) => p.id))
  }
  let done = 0
  const { promise, resolve } = Promise.withResolvers<void>()
  const worker = connectWorker(server.url, tenant.workerToken, {
    types: ['csv_import'],
    concurrency: 100,
    claimWaitMs: 1000,
    async handler(_p, ctx) {
      for (let p = 1; p <= 5; p++) await ctx.progress(p * 16, `Imported ${p * 40}/200 rows`)
      await ctx.log('3 rows skipped')
      return { result_summary: { rows_imported: 197, rows_skipped: 3 } }
    },
    onEvent: (e) => {
      if (e.type === 'completed' && ++done === N) resolve()
    },
  })
  await promise
  await worker.close()
  for (let i = 0; i < ids.length; i += 50) {
    await Promise.all(ids.slice(i, i + 50).map(async (id) => (await fetch(`${server.url}/processes/${id}`, { headers: auth })).arrayBuffer()))
  }
  await Bun.sleep(2000) // audit flush
  for (const t of ['processes', 'process_events', 'audit_log', 'idempotency_keys']) await db.sql.unsafe(`vacuum (analyze) ${t}`)
  const out: Record<string, unknown> = { processes: N }
  for (const t of ['processes', 'process_events', 'audit_log']) {
    const [r] = (await db.sql.unsafe(`
      select (select count(*) from ${t})::bigint as rows,
             (select coalesce(sum(pg_total_relation_size(relid)), 0) from (select '${t}'::regclass as relid union select relid from pg_partition_tree('${t}'::regclass)) p)::bigint as bytes`)) as any
    out[t] = { rows: Number(r.rows), bytes: Number(r.bytes), bytes_per_row: Number(r.bytes) / Number(r.rows) }
  }
  // The same rows compacted (VACUUM FULL): what they take once their updates' space is reused.
  await db.sql.unsafe('vacuum full processes')
  const [compact] = (await db.sql.unsafe(`select pg_total_relation_size('processes')::bigint as bytes, pg_relation_size('processes')::bigint as heap`)) as any
  out.processes_compacted = { bytes: Number(compact.bytes), heap: Number(compact.heap), bytes_per_row: Number(compact.bytes) / N }
  const ev = await db.sql`select status, count(*)::int as n from process_events group by 1 order by 1`
  out.events_by_status = ev
  console.log(JSON.stringify(out, null, 2))
} finally {
  await cleanupAll()
}

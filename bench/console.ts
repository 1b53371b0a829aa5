// bench console: the console's actions and reads over 100,000 processes of one workspace, on one instance.
// - POST /processes/bulk cancelling 100,000 pending processes (500-row batches, each its own transaction, an
//   event per process, published after commit), against its ceiling: the same change and events as ONE
//   statement run straight on Postgres (no batches, no publish, no audit), on another 100,000 rows of the same
//   table in the same run; and against the way a console would do it without it: one POST
//   /processes/{id}/cancel per process (1,000 of them, 8 at a time);
// - the dry run (the count preview) over 100,000;
// - GET /processes?q= that matches nothing (a search reads its SEARCH_SCAN_MAX = 10,000 newest rows), and
//   GET /processes?view=dead, against a plain GET /processes page (limit 50), each the p50 / p99 of 50 calls.
import { Histogram, now } from './histogram'
import { Report, createBenchTenant, freshDatabase, startProcessesServer } from './lib'

const ROWS = Number(process.env.BENCH_CONSOLE_ROWS ?? 100_000)
const SINGLES = 1000
const SINGLE_CONCURRENCY = 8
const CALLS = 50

export async function run(): Promise<Report> {
  const report = new Report('console', { rows: ROWS, singles: SINGLES, calls: CALLS })
  const { url, db } = await freshDatabase()
  const tenant = await createBenchTenant(db)
  const server = await startProcessesServer('server', { DATABASE_URL: url })
  const auth = { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' }
  const insert = (type: string, count: number, status = 'pending') =>
    db.sql`
      insert into processes (workspace_id, type, status, metadata, message)
      select ${tenant.workspaceId}, ${type}, ${status}, jsonb_build_object('n', g, 'customer', 'customer-' || g), 'Queued'
        from generate_series(1, ${count}) g`
  await insert('bench_bulk', ROWS)
  await insert('bench_ceiling', ROWS)
  await insert('bench_single', SINGLES)
  // A dead-letter tail among them, for view=dead.
  await db.sql`insert into processes (workspace_id, type, status, attempts, max_attempts, error, finished_at)
               select ${tenant.workspaceId}, 'bench_dead', 'failed', 3, 3, 'boom', now() from generate_series(1, 500)`
  await db.sql`analyze processes`

  const bulk = async (body: unknown) => {
    const res = await fetch(`${server.url}/processes/bulk`, { method: 'POST', headers: auth, body: JSON.stringify(body) })
    if (res.status !== 200) throw new Error(`bulk: ${res.status} ${await res.text()}`)
    return (await res.json()) as { matched: number; changed?: number }
  }

  let started = now()
  const preview = await bulk({ action: 'cancel', filter: { type: 'bench_bulk' }, dry_run: true })
  const previewMs = now() - started
  started = now()
  const done = await bulk({ action: 'cancel', filter: { type: 'bench_bulk' } })
  const bulkS = (now() - started) / 1000
  if (preview.matched !== ROWS || done.changed !== ROWS) throw new Error(`bulk matched ${preview.matched}, changed ${done.changed}`)

  started = now()
  await db.sql`
    with p as (
      update processes set status = 'cancelled', message = 'Cancelled', version = version + 1, updated_at = now(), finished_at = now()
       where workspace_id = ${tenant.workspaceId} and type = 'bench_ceiling' and status = any(${['pending', 'running']}::text[])
      returning id, status, message
    )
    insert into process_events (process_id, status, message) select id, status, message from p`
  const ceilingS = (now() - started) / 1000

  const singleIds = (await db.sql<{ id: number }[]>`select id from processes where type = 'bench_single'`).map((r) => r.id)
  started = now()
  let next = 0
  await Promise.all(
    Array.from({ length: SINGLE_CONCURRENCY }, async () => {
      while (next < singleIds.length) {
        const id = singleIds[next++]!
        const res = await fetch(`${server.url}/processes/${id}/cancel`, { method: 'POST', headers: auth })
        if (res.status !== 200) throw new Error(`cancel ${id}: ${res.status}`)
        await res.arrayBuffer()
      }
    }),
  )
  const singleRate = SINGLES / ((now() - started) / 1000)

  const bulkRate = ROWS / bulkS
  const ceilingRate = ROWS / ceilingS
  report.add({
    figure: `bulk cancel of ${ROWS.toLocaleString('en-US')} by filter (batches of 500, events, publish, audit)`,
    value: bulkRate,
    unit: 'processes/s',
    ceiling: ceilingRate,
    ceilingLabel: 'one raw UPDATE + events statement',
    ratio: bulkRate / ceilingRate,
  })
  report.add({ figure: 'the same bulk cancel, wall time', value: bulkS, unit: 's', ceiling: ceilingS, ceilingLabel: 'one statement' })
  report.add({
    figure: 'bulk cancel vs one POST /processes/{id}/cancel per process (8 at a time)',
    value: bulkRate,
    unit: 'processes/s',
    ceiling: singleRate,
    ceilingLabel: 'single cancels',
    ratio: bulkRate / singleRate,
    goal: '≥ 10× the single route',
    pass: bulkRate >= 10 * singleRate,
  })
  report.add({ figure: `dry run (count preview) over ${ROWS.toLocaleString('en-US')}`, value: previewMs, unit: 'ms' })

  const latency = async (path: string) => {
    const h = new Histogram()
    for (let i = 0; i < CALLS; i++) {
      const t0 = now()
      const res = await fetch(`${server.url}${path}`, { headers: auth })
      if (res.status !== 200) throw new Error(`${path}: ${res.status}`)
      await res.arrayBuffer()
      h.record(now() - t0)
    }
    return h
  }
  const plain = await latency('/processes?limit=50')
  const search = await latency('/processes?limit=50&q=no-such-customer')
  const dead = await latency('/processes?limit=50&view=dead')
  report.data.latency_ms = { plain: plain.toJSON(), search: search.toJSON(), dead: dead.toJSON() }
  for (const [name, h] of [
    ['GET /processes?q= (no match: reads 10,000 rows)', search],
    ['GET /processes?view=dead', dead],
  ] as const) {
    report.add({
      figure: `${name} p50`,
      value: h.quantile(0.5),
      unit: 'ms',
      ceiling: plain.quantile(0.5),
      ceilingLabel: 'plain list page',
      ratio: h.quantile(0.5) / plain.quantile(0.5),
    })
    report.add({
      figure: `${name} p99`,
      value: h.quantile(0.99),
      unit: 'ms',
      ceiling: plain.quantile(0.99),
      ceilingLabel: 'plain list page',
      goal: '< 1000 ms (DB_STATEMENT_TIMEOUT_MS is 5000)',
      pass: h.quantile(0.99) < 1000,
    })
  }
  report.note(
    'the ceiling runs the same update and event inserts in one statement: it holds locks on every row until it ends and could exceed DB_STATEMENT_TIMEOUT_MS; the bulk route trades that for bounded transactions',
  )
  return report
}

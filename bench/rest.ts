// bench rest: wrk against GET /processes/{id} (200), the same with a matching If-None-Match (304), and
// GET /processes?limit=50, over 100,000 processes in one workspace, with bearer auth and audit on (every
// request ends as an audit_log row, checked at the end). Ceilings in the same run: a bare Bun.serve
// hello-world, and a bare Bun.serve + postgres.js endpoint running the same single-row select with no auth.
import {
  BENCH_DIR,
  BUN,
  Report,
  WRK_MISSING,
  createBenchTenant,
  freshDatabase,
  hasWrk,
  runWrk,
  sleep,
  startProcessesServer,
  startServer,
  wrkLua,
  type WrkResult,
} from './lib'

const env = process.env
const ROWS = Number(env.BENCH_REST_ROWS ?? 100_000)
const DURATION_S = Number(env.BENCH_REST_SECONDS ?? 10)
const WARMUP_S = Number(env.BENCH_REST_WARMUP_SECONDS ?? 3)
// One wrk thread is enough to saturate one Bun process here and leaves the other core to the server and Postgres.
const THREADS = Number(env.BENCH_WRK_THREADS ?? 1)
const CONNECTIONS = Number(env.BENCH_WRK_CONNECTIONS ?? 50)
const POOL = 10
const LOG_LEVEL = env.BENCH_REST_LOG_LEVEL ?? 'info'

export async function run(): Promise<Report> {
  if (!hasWrk()) throw new Error(WRK_MISSING)
  const report = new Report('rest', {
    rows: ROWS,
    wrk: `-t${THREADS} -c${CONNECTIONS} -d${DURATION_S}s (after a ${WARMUP_S} s warm-up)`,
    db_pool_max: POOL,
    log_level: LOG_LEVEL,
  })

  const { url, db } = await freshDatabase()
  const tenant = await createBenchTenant(db)
  const seedStarted = performance.now()
  // One statement: a realistic mix of types and statuses, metadata, messages, timestamps spread over a month.
  await db.sql`
    insert into processes (workspace_id, type, status, progress, message, metadata, result_summary, attempts,
                           created_by, created_at, updated_at, started_at, finished_at)
    select ${tenant.workspaceId},
           (array['csv_import', 'report.build', 'email.batch', 'video.transcode'])[1 + g % 4],
           s.status,
           case when s.status = 'completed' then 100 when s.status = 'pending' then 0 else g % 100 end,
           'step ' || (g % 100),
           jsonb_build_object('file', 'upload-' || g || '.csv', 'rows', g % 5000),
           case when s.status = 'completed' then jsonb_build_object('rows', g % 5000) end,
           case when s.status = 'pending' then 0 else 1 end,
           ${tenant.userId},
           now() - (${ROWS} - g) * interval '25 seconds',
           now() - (${ROWS} - g) * interval '25 seconds',
           case when s.status <> 'pending' then now() - (${ROWS} - g) * interval '25 seconds' end,
           case when s.status in ('completed', 'failed', 'cancelled') then now() - (${ROWS} - g) * interval '20 seconds' end
      from generate_series(1, ${ROWS}) g
      cross join lateral (
        select (array['completed', 'completed', 'completed', 'completed', 'failed', 'cancelled', 'running', 'pending', 'waiting_review', 'completed'])[1 + g % 10] as status
      ) s`
  // As a table in service would be: hint bits set and the visibility map built, so no run pays for the seed's writes.
  await db.sql`vacuum (analyze) processes`
  const [{ lo, hi }] = (await db.sql<{ lo: number; hi: number }[]>`select min(id)::int as lo, max(id)::int as hi from processes`) as any
  report.data.seed_seconds = (performance.now() - seedStarted) / 1000

  const hello = await startServer('hello-world', [BUN, `${BENCH_DIR}ceilings/hello-server.ts`])
  const select = await startServer('bare select', [BUN, `${BENCH_DIR}ceilings/select-server.ts`], {
    DATABASE_URL: url,
    DB_POOL_MAX: String(POOL),
    WORKSPACE_ID: String(tenant.workspaceId),
  })
  // As deployed: one JSON log line per request on stdout (read by this process, as a container's log driver would).
  const server = await startProcessesServer('processes server', { DATABASE_URL: url, DB_POOL_MAX: String(POOL), LOG_LEVEL: LOG_LEVEL })

  // Sanity: each endpoint answers what it is meant to before it is measured.
  const auth = { authorization: `Bearer ${tenant.token}` }
  const sample = await fetch(`${server.url}/processes/${lo}`, { headers: auth })
  const etag = sample.headers.get('etag')
  if (sample.status !== 200 || !etag) throw new Error(`GET /processes/${lo}: ${sample.status} ${await sample.text()}`)
  const notModified = await fetch(`${server.url}/processes/${lo}`, { headers: { ...auth, 'if-none-match': etag } })
  if (notModified.status !== 304) throw new Error(`If-None-Match gave ${notModified.status}, expected 304`)
  const list = await fetch(`${server.url}/processes?limit=50`, { headers: auth })
  if (list.status !== 200 || ((await list.json()) as unknown[]).length !== 50) throw new Error(`GET /processes?limit=50: ${list.status}`)
  if ((await fetch(`${select.url}/processes/${lo}`)).status !== 200) throw new Error('the bare select server did not find the row')
  // Every seeded process is at version 1, so one If-None-Match matches whichever id wrk picks.
  if (etag !== '"1"') throw new Error(`expected the seeded version 1, got ETag ${etag}`)

  const ids: [number, number] = [lo, hi]
  const results: Record<string, WrkResult> = {}
  const measure = async (name: string, target: { url: string; pid: number }, lua: string) => {
    results[name] = await runWrk({
      url: target.url,
      lua,
      threads: THREADS,
      connections: CONNECTIONS,
      durationS: DURATION_S,
      warmupS: WARMUP_S,
      serverPid: target.pid,
      postgres: true,
    })
    await sleep(500)
  }
  const [auditBefore] = await db.sql<{ n: number }[]>`select count(*)::int as n from audit_log`
  await measure('hello', hello, wrkLua({ path: '/' }))
  await measure('select', select, wrkLua({ path: '/processes/{id}', idRange: ids }))
  await measure('get', server, wrkLua({ path: '/processes/{id}', token: tenant.token, idRange: ids }))
  await measure('get304', server, wrkLua({ path: '/processes/{id}', token: tenant.token, idRange: ids, headers: { 'If-None-Match': '"1"' } }))
  await measure('list', server, wrkLua({ path: '/processes?limit=50', token: tenant.token }))
  // The list's own latency, without queueing behind 49 other connections: one connection, back to back.
  results.listSerial = await runWrk({
    url: server.url,
    lua: wrkLua({ path: '/processes?limit=50', token: tenant.token }),
    threads: 1,
    connections: 1,
    durationS: Math.min(5, DURATION_S),
    warmupS: 1,
  })

  // Audit is on: the rows of every request wrk made (warm-ups included) reach audit_log within a flush or two.
  await sleep(1000)
  const [auditAfter] = await db.sql<{ n: number }[]>`select count(*)::int as n from audit_log`
  const audited = auditAfter!.n - auditBefore!.n
  const metrics = await (await fetch(server.metricsUrl)).text()
  const served = [...metrics.matchAll(/processes_http_requests_total\{method="GET",route="\/processes\/?(?::id)?",status="(?:200|304)"\} (\d+)/g)].reduce(
    (s, m) => s + Number(m[1]),
    0,
  )

  const { hello: h, select: s, get, get304, list: l, listSerial: ls } = results as Record<string, WrkResult>
  const errors = (r: WrkResult) => r.non2xx3xx + (r.socketErrors ? 1 : 0)
  report.add({ figure: 'hello-world (Bun.serve)', value: h!.requestsPerSec, unit: 'req/s' })
  report.add({
    figure: 'bare select (Bun.serve + postgres.js)',
    value: s!.requestsPerSec,
    unit: 'req/s',
    ceiling: h!.requestsPerSec,
    ceilingLabel: 'hello',
    ratio: s!.requestsPerSec / h!.requestsPerSec,
  })
  report.add({
    figure: 'GET /processes/{id} 200 vs bare select',
    value: get!.requestsPerSec,
    unit: 'req/s',
    ceiling: s!.requestsPerSec,
    ceilingLabel: 'bare select',
    ratio: get!.requestsPerSec / s!.requestsPerSec,
    goal: '≥ 0.8×',
    pass: get!.requestsPerSec >= 0.8 * s!.requestsPerSec && errors(get!) === 0,
  })
  report.add({
    figure: 'GET /processes/{id} 200 vs hello-world',
    value: get!.requestsPerSec,
    unit: 'req/s',
    ceiling: h!.requestsPerSec,
    ceilingLabel: 'hello',
    ratio: get!.requestsPerSec / h!.requestsPerSec,
    goal: '≥ 0.35×',
    pass: get!.requestsPerSec >= 0.35 * h!.requestsPerSec,
  })
  const cpuUs = (r: WrkResult) => ((r.serverCpuSeconds ?? NaN) / r.requests) * 1e6
  report.add({
    figure: 'GET /processes/{id} 304 (If-None-Match)',
    value: get304!.requestsPerSec,
    unit: 'req/s',
    ceiling: get!.requestsPerSec,
    ceilingLabel: 'the 200',
    ratio: get304!.requestsPerSec / get!.requestsPerSec,
  })
  report.add({ figure: 'server CPU per request: bare select', value: cpuUs(s!), unit: 'µs' })
  report.add({
    figure: 'server CPU per request: GET /processes/{id} 200',
    value: cpuUs(get!),
    unit: 'µs',
    ceiling: cpuUs(s!),
    ceilingLabel: 'bare select',
    ratio: cpuUs(get!) / cpuUs(s!),
  })
  report.add({
    figure: 'server CPU per request: GET /processes/{id} 304',
    value: cpuUs(get304!),
    unit: 'µs',
    ceiling: cpuUs(get!),
    ceilingLabel: 'the 200',
    ratio: cpuUs(get304!) / cpuUs(get!),
  })
  const pgUs = (r: WrkResult) => ((r.postgresCpuSeconds ?? NaN) / r.requests) * 1e6
  report.add({ figure: 'Postgres CPU per request: bare select', value: pgUs(s!), unit: 'µs' })
  report.add({
    figure: 'Postgres CPU per request: GET /processes/{id} 200',
    value: pgUs(get!),
    unit: 'µs',
    ceiling: pgUs(s!),
    ceilingLabel: 'bare select',
    ratio: pgUs(get!) / pgUs(s!),
  })
  report.add({
    figure: 'Postgres CPU per request: GET /processes/{id} 304',
    value: pgUs(get304!),
    unit: 'µs',
    ceiling: pgUs(get!),
    ceilingLabel: 'the 200',
    ratio: pgUs(get304!) / pgUs(get!),
  })
  const totalUs = (r: WrkResult) => cpuUs(r) + pgUs(r)
  report.add({
    figure: 'server + Postgres CPU per request: 304',
    value: totalUs(get304!),
    unit: 'µs',
    ceiling: totalUs(get!),
    ceilingLabel: 'the 200',
    ratio: totalUs(get304!) / totalUs(get!),
    goal: '< 1× (cheaper than 200)',
    pass: totalUs(get304!) < totalUs(get!) && errors(get304!) === 0,
  })
  report.add({
    figure: 'GET /processes/{id} 200 median latency',
    value: get!.latencyMs.p50,
    unit: 'ms',
    ceiling: s!.latencyMs.p50,
    ceilingLabel: 'bare select',
    ratio: get!.latencyMs.p50 / s!.latencyMs.p50,
  })
  report.add({
    figure: 'GET /processes/{id} 304 median latency',
    value: get304!.latencyMs.p50,
    unit: 'ms',
    ceiling: get!.latencyMs.p50,
    ceilingLabel: 'the 200',
    ratio: get304!.latencyMs.p50 / get!.latencyMs.p50,
  })
  report.add({
    figure: 'GET /processes?limit=50',
    value: l!.requestsPerSec,
    unit: 'req/s',
    ceiling: h!.requestsPerSec,
    ceilingLabel: 'hello',
    ratio: l!.requestsPerSec / h!.requestsPerSec,
  })
  report.add({
    figure: 'GET /processes?limit=50 median latency, 1 connection',
    value: ls!.latencyMs.p50,
    unit: 'ms',
    goal: '< 5 ms',
    pass: ls!.latencyMs.p50 < 5 && errors(ls!) === 0 && errors(l!) === 0,
  })
  report.add({ figure: 'GET /processes?limit=50 p99 latency, 1 connection', value: ls!.latencyMs.p99, unit: 'ms' })
  report.add({ figure: `GET /processes?limit=50 median latency, ${CONNECTIONS} connections`, value: l!.latencyMs.p50, unit: 'ms' })
  report.add({
    figure: 'audit rows written / requests served',
    value: audited / served,
    unit: '',
    goal: '= 1 (audit on)',
    pass: Math.abs(audited - served) <= served * 0.001 + 5,
  })
  report.note(
    '"cheaper" is judged on the CPU time per request of the server process and of Postgres together (from /proc), the cost a 2-second poller puts on the deployment: the request rate is shared with wrk on the same cores',
  )
  report.note(
    `each run: wrk in its own process, ${WARMUP_S} s warm-up then ${DURATION_S} s measured; ids drawn uniformly from the ${ROWS.toLocaleString('en-US')} rows; Bearer token on every request to the real server`,
  )
  report.note(
    `latency figures come from wrk's latency distribution: under the same ${CONNECTIONS}-connection closed-loop load as the rate (so mostly queueing), except the "1 connection" rows (requests back to back: the request's own time)`,
  )
  for (const [name, r] of Object.entries(results))
    if (errors(r) > 0) report.note(`${name}: ${r.non2xx3xx} non-2xx/3xx responses, socket errors: ${r.socketErrors ?? 'none'}`)
  report.data.wrk = Object.fromEntries(Object.entries(results).map(([k, r]) => [k, { ...r, raw: r.raw.split('\n') }]))
  report.data.audit = { rows: audited, requests_served: served }
  return report
}

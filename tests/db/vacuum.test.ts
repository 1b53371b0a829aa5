// processes stays flat by design (sql/007_processes_vacuum.sql, src/db/retention.ts): progress updates are HOT
// thanks to the table's fillfactor; where no autovacuum runs (the shared Postgres here has it off, PGlite has
// none) the retention job vacuums processes itself once its dead tuples pass autovacuum's threshold for it; and
// where autovacuum runs (a Postgres of this file's own, autovacuum on) the job leaves vacuuming to it.
import { afterAll, beforeAll, describe, expect, it } from 'bun:test'
import { chownSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createTenant, freePort, hasPostgres, quietLogger, testDatabase, waitFor, type Tenant } from '../support/helpers'
import { openDatabase, type Database, type Sql } from '../../src/db/client'
import { migrate } from '../../src/db/migrate'
import { RetentionJob, vacuumDue, type RetentionSettings } from '../../src/db/retention'

const settings: RetentionSettings = {
  processDays: { completed: 7, failed: 7, cancelled: 7 },
  eventDays: 30,
  auditDays: 90,
  partitionMs: 86_400_000,
  aheadMs: 3 * 86_400_000,
}
const job = (sql: Sql, intervalMs = 60_000) => new RetentionJob(sql, settings, quietLogger(), intervalMs)

async function stats(sql: Sql) {
  const [row] = await sql<{ dead: number; vacuums: number; autovacuums: number; updates: number; hot: number }[]>`
    select n_dead_tup::float8 as dead, vacuum_count::float8 as vacuums, autovacuum_count::float8 as autovacuums,
           n_tup_upd::float8 as updates, n_tup_hot_upd::float8 as hot
      from pg_stat_user_tables where relname = 'processes'`
  return { dead: Number(row!.dead), vacuums: Number(row!.vacuums), autovacuums: Number(row!.autovacuums), updates: Number(row!.updates), hot: Number(row!.hot) }
}
const processesDue = async (sql: Sql) => (await vacuumDue(sql)).find((d) => d.table === 'processes')!

async function insertProcesses(sql: Sql, workspaceId: number, n: number, status: string, finishedAt: Date | null) {
  await sql`insert into processes (workspace_id, type, status, finished_at, metadata)
            select ${workspaceId}, 'csv_import', ${status}, ${finishedAt}, jsonb_build_object('n', i) from generate_series(1, ${n}) i`
}
const longAgo = () => new Date(Date.now() - 10 * 86_400_000)

/**
 * 200 fresh rows (~7 pages), then 3 rounds of one progress write per row, each its own statement, as a worker's
 * awaited progress makes them: what the write-behind sets (src/processes/queries/reports.ts), no indexed column, so HOT when
 * the page has room. Measured: 95–100 % HOT at fillfactor 70; 54–79 % at the default 100 (the rest new versions
 * on other pages, each with an entry in every one of the table's ten indexes).
 *
 * Only where no other database is busy: on the shared Postgres, under the other benchmarks, 207 of 600 were HOT.
 * On-access pruning (which makes the room again) removes only versions past the backend's horizon, and our
 * reading of Postgres 15 is that a long transaction in any other database keeps that horizon from advancing.
 */
async function expectHotProgress(sql: Sql, workspaceId: number) {
  const [row] = await sql<{ options: string[] }[]>`select reloptions as options from pg_class where relname = 'processes'`
  expect(row!.options).toEqual(expect.arrayContaining(['fillfactor=70', 'autovacuum_vacuum_threshold=1000', 'autovacuum_vacuum_scale_factor=0.02']))
  const before = await stats(sql)
  await insertProcesses(sql, workspaceId, 200, 'running', null)
  const ids = (await sql<{ id: number }[]>`select id from processes where workspace_id = ${workspaceId} order by id`).map((r) => r.id)
  for (let round = 1; round <= 3; round++) {
    for (const id of ids)
      await sql`update processes set progress = ${round * 25}, message = 'Working', version = version + 1, updated_at = now() where id = ${id}`
    // Between a job's progress writes the worker works; here, a pause.
    await Bun.sleep(1000)
  }
  // Statistics reach pg_stat_user_tables a second or two after the transactions (the backend flushes them).
  let now = before
  await waitFor(
    async () => (now = await stats(sql)).updates - before.updates >= 600,
    20_000,
    () => `600 updates counted (${now.updates - before.updates})`,
  )
  expect(now.hot - before.hot).toBeGreaterThanOrEqual(0.9 * 600)
  await sql`delete from processes where workspace_id = ${workspaceId}`
}

/** Whether an autovacuum launcher runs, as a superuser sees it in pg_stat_activity (the test roles are). */
async function launcherRuns(sql: Sql) {
  return (await sql`select 1 from pg_stat_activity where backend_type = 'autovacuum launcher'`).length > 0
}

// The test database: the shared Postgres (autovacuum off on this machine) or an in-memory PGlite.
describe('processes on the test database', async () => {
  const { db } = await testDatabase()
  const { sql } = db
  const tenant = await createTenant(sql)
  const autovacuumOff = !hasPostgres || (await sql<{ autovacuum: string }[]>`show autovacuum`)[0]!.autovacuum === 'off'

  // On the shared Postgres the other databases' transactions decide it (see expectHotProgress): PGlite only.
  it.skipIf(hasPostgres)('keeps progress updates HOT: they find room on their own page (fillfactor 70)', async () => {
    await expectHotProgress(sql, tenant.workspaceId)
  })

  it.skipIf(!autovacuumOff)('vacuums processes itself after a pass that pruned, where no autovacuum runs: its dead rows go down', async () => {
    // Nothing here runs autovacuum, and the detection says so (PGlite: no launcher, though its setting says on).
    expect(await launcherRuns(sql)).toBe(false)
    expect((await vacuumDue(sql)).map((d) => [d.table, d.autovacuum])).toEqual([
      ['idempotency_keys', false],
      ['processes', false],
    ])
    await sql.unsafe('vacuum processes')
    const before = await stats(sql)
    await insertProcesses(sql, tenant.workspaceId, 3000, 'completed', longAgo())
    const retention = job(sql, 200)
    expect((await retention.runOnce()).processesDeleted).toBe(3000)
    // The dead tuples of the pass's deletes, once counted, are far over the threshold (1,000 + 2 % of the rows).
    // The job's loop (every 200 ms here) vacuums, and they go.
    retention.start()
    let now = before
    try {
      await waitFor(
        async () => (now = await stats(sql)).vacuums > before.vacuums && now.dead < 100,
        30_000,
        () => `a vacuum and dead rows gone (${JSON.stringify(now)})`,
      )
    } finally {
      await retention.stop()
    }
    expect(retention.totals.vacuums).toBeGreaterThanOrEqual(1)
    expect(retention.totals.vacuum_seconds).toBeGreaterThan(0)
    expect(now.autovacuums).toBe(0)
  })

  it.skipIf(!autovacuumOff)('leaves processes alone while its dead rows are under the threshold, and vacuums once they pass it', async () => {
    await insertProcesses(sql, tenant.workspaceId, 2000, 'pending', null)
    await sql.unsafe('vacuum (analyze) processes')
    const retention = job(sql)
    const base = await stats(sql)
    const threshold = (await processesDue(sql)).threshold
    // The migration's 1,000 + 2 % of the table's rows (reltuples, as analyze left it).
    const [{ reltuples }] = await sql<{ reltuples: number }[]>`select reltuples::float8 as reltuples from pg_class where relname = 'processes'`
    expect(Number(reltuples)).toBeGreaterThanOrEqual(2000)
    expect(threshold).toBeCloseTo(1000 + 0.02 * Number(reltuples))
    // 500 updated (500 dead versions): under the threshold, waited for until counted, not vacuumed.
    await sql`update processes set progress = 1 where id in (select id from processes where workspace_id = ${tenant.workspaceId} order by id limit 500)`
    await waitFor(async () => (await processesDue(sql)).dead >= 500, 20_000, 'the 500 dead rows counted')
    await retention.vacuumWhereDue()
    expect(retention.totals.vacuums).toBe(0)
    expect((await stats(sql)).vacuums).toBe(base.vacuums)
    // All 2,000 again: 2,500 dead, over it.
    await sql`update processes set progress = 2 where workspace_id = ${tenant.workspaceId}`
    await waitFor(async () => (await processesDue(sql)).dead > threshold, 20_000, 'the dead rows counted')
    await retention.vacuumWhereDue()
    expect(retention.totals.vacuums).toBe(1)
    expect((await stats(sql)).vacuums).toBe(base.vacuums + 1)
  })

  it.skipIf(!autovacuumOff)('analyzes with a vacuum at most once a minute (ANALYZE_MIN_INTERVAL_MS): a second vacuum soon after does not', async () => {
    const analyzes = async () =>
      Number((await sql<{ n: number }[]>`select analyze_count::float8 as n from pg_stat_user_tables where relname = 'processes'`)[0]!.n)
    await insertProcesses(sql, tenant.workspaceId, 2000, 'pending', null)
    await sql.unsafe('vacuum processes')
    const retention = job(sql)
    const dirty = async (progress: number) => {
      const before = await stats(sql)
      await sql`update processes set progress = ${progress} where workspace_id = ${tenant.workspaceId}`
      await waitFor(
        async () => (await processesDue(sql)).dead > (await processesDue(sql)).threshold && (await stats(sql)).updates > before.updates,
        20_000,
        'dead rows counted',
      )
    }
    await dirty(3)
    const before = { vacuums: (await stats(sql)).vacuums, analyzes: await analyzes() }
    await retention.vacuumWhereDue() // vacuum and analyze: the job has not analyzed yet
    await waitFor(async () => (await analyzes()) === before.analyzes + 1, 20_000, 'the first vacuum analyzed')
    await dirty(4)
    await retention.vacuumWhereDue() // vacuum only: analyzed less than a minute ago
    await waitFor(async () => (await stats(sql)).vacuums === before.vacuums + 2, 20_000, 'the second vacuum counted')
    expect(await analyzes()).toBe(before.analyzes + 1)
    expect(retention.totals.vacuums).toBe(2)
  })
})

// ---------------------------------------------------------------------------------------------------------
// A Postgres of this file's own, autovacuum on, on a free port (the shared one is never touched). Its naptime
// is an hour, so autovacuum's own workers stay out of the way while the test counts dead rows; the launcher
// runs all the same. As root (this machine's tests are), initdb and postgres run as the postgres user.

const POSTGRES_BIN = Bun.which('postgres') && Bun.which('initdb') && Bun.which('pg_isready')

async function ownPostgres(config: string[]) {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'ps-own-pg-'))
  let asPostgres: string[] = []
  if (process.getuid?.() === 0) {
    const uid = Number(Bun.spawnSync(['id', '-u', 'postgres']).stdout.toString())
    const gid = Number(Bun.spawnSync(['id', '-g', 'postgres']).stdout.toString())
    chownSync(dir, uid, gid)
    asPostgres = ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--']
  }
  const init = Bun.spawnSync([...asPostgres, 'initdb', '-D', dir, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8'], {
    stdout: 'ignore',
    stderr: 'pipe',
  })
  if (init.exitCode !== 0) throw new Error(`initdb: ${init.stderr.toString()}`)
  const args = [
    '-c',
    'listen_addresses=127.0.0.1',
    '-c',
    `unix_socket_directories=${dir}`,
    '-c',
    'fsync=off',
    '-c',
    'max_connections=20',
    ...config.flatMap((c) => ['-c', c]),
  ]
  // setpriv execs: the PID is the postmaster's own, stopped by it alone.
  const proc = Bun.spawn([...asPostgres, 'postgres', '-D', dir, '-p', String(port), ...args], { stdout: 'ignore', stderr: 'ignore' })
  const stop = async () => {
    proc.kill('SIGINT') // fast shutdown
    await proc.exited
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    await waitFor(() => Bun.spawnSync(['pg_isready', '-h', '127.0.0.1', '-p', String(port)]).exitCode === 0, 30_000, `own postgres on ${port}`)
  } catch (error) {
    await stop()
    throw error
  }
  return { url: `postgres://postgres@127.0.0.1:${port}/postgres`, stop }
}

describe.skipIf(!hasPostgres || !POSTGRES_BIN)('processes where autovacuum runs', () => {
  // Started in beforeAll, not in the describe's body: a run that selects none of these tests (`bun test -t`)
  // runs no hook of it, and so starts nothing to leave behind (two such runs left their servers running).
  let own: Awaited<ReturnType<typeof ownPostgres>>
  let db: Database
  let sql: Sql
  let tenant: Tenant
  beforeAll(async () => {
    own = await ownPostgres(['autovacuum=on', 'autovacuum_naptime=3600'])
    db = await openDatabase({ url: own.url, dataDir: '', poolMax: 4 })
    sql = db.sql
    await migrate(sql)
    tenant = await createTenant(sql)
  })
  afterAll(async () => {
    await db?.close()
    await own?.stop()
  })

  it('sees the launcher, as a superuser and as a role that cannot see it in pg_stat_activity', async () => {
    expect(await launcherRuns(sql)).toBe(true)
    expect((await vacuumDue(sql)).map((d) => [d.table, d.autovacuum])).toEqual([
      ['idempotency_keys', true],
      ['processes', true],
    ])
    // A role without pg_read_all_stats gets no other backend's type from pg_stat_activity: looking for the
    // launcher there would find none, and vacuum behind autovacuum's back. The settings say the same to it.
    await sql.unsafe(`create role ps_app login`)
    const app = await openDatabase({ url: own.url.replace('postgres@', 'ps_app@'), dataDir: '', poolMax: 1 })
    try {
      expect(await launcherRuns(app.sql)).toBe(false)
      expect((await vacuumDue(app.sql)).map((d) => d.autovacuum)).toEqual([true, true])
    } finally {
      await app.close()
    }
  })

  it('keeps progress updates HOT there: they find room on their own page (fillfactor 70)', async () => {
    await expectHotProgress(sql, tenant.workspaceId)
  })

  it('does not vacuum after a pass that pruned, past the threshold; does once the table opts out of autovacuum', async () => {
    await insertProcesses(sql, tenant.workspaceId, 3000, 'completed', longAgo())
    const retention = job(sql)
    expect((await retention.runOnce()).processesDeleted).toBe(3000)
    await waitFor(
      async () => {
        const due = await processesDue(sql)
        return due.dead > due.threshold
      },
      20_000,
      'the deletes counted as dead rows',
    )
    await retention.vacuumWhereDue()
    expect(retention.totals.vacuums).toBe(0)
    expect((await stats(sql)).vacuums).toBe(0)
    // autovacuum_enabled = false on the table: autovacuum will not vacuum it, so the job does.
    await sql.unsafe('alter table processes set (autovacuum_enabled = false)')
    expect((await processesDue(sql)).autovacuum).toBe(false)
    await retention.vacuumWhereDue()
    expect(retention.totals.vacuums).toBe(1)
    const after = await stats(sql)
    expect(after.vacuums).toBe(1)
    expect(after.autovacuums).toBe(0)
  })
})

// Bounded storage: audit_log and process_events partitioned by time, retention that drops old partitions and
// prunes finished processes (with their idempotency keys), safe on every instance, and its metrics.
import { describe, expect, it } from 'bun:test'
import { createTenant, freshDatabaseUrl, waitFor, hasPostgres, listeningServer, quietLogger, testConfig, testDatabase } from '../support/helpers'
import { openDatabase, type Sql } from '../../src/db/client'
import { migrate } from '../../src/db/migrate'
import { MIGRATIONS } from '../../src/db/migrations'
import { createPartition, listPartitions, partitionName, RetentionJob, retentionSettings, type RetentionSettings } from '../../src/db/retention'

const DAY_MS = 86_400_000
const settings = (o: Partial<RetentionSettings> = {}): RetentionSettings => ({
  processDays: { completed: 7, failed: 7, cancelled: 7 },
  eventDays: 30,
  auditDays: 90,
  partitionMs: DAY_MS,
  aheadMs: 3 * DAY_MS,
  ...o,
})
const job = (sql: Sql, o: Partial<RetentionSettings> = {}) => new RetentionJob(sql, settings(o), quietLogger(), 60_000)
const daysAgo = (n: number) => new Date(Date.now() - n * DAY_MS)

async function insertProcess(sql: Sql, workspaceId: number, status: string, finishedAt: Date | null) {
  const [row] = await sql<{ id: number }[]>`
    insert into processes (workspace_id, type, status, finished_at) values (${workspaceId}, 'csv_import', ${status}, ${finishedAt})
    returning id`
  return row!.id
}

describe('partitioned tables', async () => {
  const { db } = await testDatabase()
  const { sql } = db

  it('makes audit_log and process_events range-partitioned on created_at, with partitions ahead and a default', async () => {
    const rows = await sql<{ name: string }[]>`
      select c.relname as name from pg_partitioned_table p join pg_class c on c.oid = p.partrelid order by 1`
    expect(rows.map((r) => r.name)).toEqual(['audit_log', 'process_events'])
    for (const table of ['audit_log', 'process_events'] as const) {
      const partitions = await listPartitions(sql, table)
      expect(partitions.at(-1)!.to.getTime()).toBeGreaterThan(Date.now() + 2 * DAY_MS)
      expect(partitions.some((p) => p.from.getTime() <= Date.now() && Date.now() < p.to.getTime())).toBe(true)
      const [dflt] = await sql`select 1 from pg_class where relname = ${`${table}_default`}`
      expect(dflt).toBeDefined()
    }
  })

  it('still refuses update, delete and truncate of events, on the table and on each partition', async () => {
    const tenant = await createTenant(sql)
    const id = await insertProcess(sql, tenant.workspaceId, 'pending', null)
    await sql`insert into process_events (process_id, status, message) values (${id}, 'pending', 'Queued')`
    const made = await createPartition(sql, 'process_events', new Date('2021-03-01T00:00:00Z'), new Date('2021-03-02T00:00:00Z'))
    await sql`insert into process_events (process_id, status, message, created_at) values (${id}, 'pending', 'old', '2021-03-01T12:00:00Z')`
    const refused = async (text: string) => {
      let error: unknown
      try {
        await sql.unsafe(text)
      } catch (e) {
        error = e
      }
      expect(String(error)).toContain('append-only')
    }
    await refused(`update process_events set message = 'x' where process_id = ${id}`)
    await refused(`delete from process_events where process_id = ${id}`)
    await refused('truncate process_events')
    await refused(`delete from ${made}`)
    await refused(`truncate ${made}`)
    const [{ n }] = (await sql`select count(*)::int as n from process_events where process_id = ${id}`) as any
    expect(n).toBe(2)
  })
})

describe('the conversion keeps what was there', async () => {
  const url = hasPostgres ? await freshDatabaseUrl() : undefined
  const db = await openDatabase({ url, dataDir: 'memory://', poolMax: 2 })
  const { sql } = db
  const before = MIGRATIONS.findIndex((m) => m.name === '005_storage.sql')

  it('moves existing events and audit rows, ids and sequences into the partitioned tables', async () => {
    await migrate(sql, MIGRATIONS.slice(0, before))
    const tenant = await createTenant(sql)
    const id = await insertProcess(sql, tenant.workspaceId, 'pending', null)
    await sql`insert into process_events (process_id, status, message, created_at)
              values (${id}, 'pending', 'last year', now() - interval '400 days'), (${id}, 'running', 'today', now())`
    await sql`insert into audit_log (method, route, status, created_at) values ('GET', '/processes', 200, now() - interval '2 days')`
    const events = await sql`select id, process_id, status, message, created_at from process_events order by id`
    const audit = await sql`select id, method, route, status, created_at from audit_log order by id`

    await migrate(sql)
    expect(await sql`select id, process_id, status, message, created_at from process_events order by id`).toEqual(events)
    expect(await sql`select id, method, route, status, created_at from audit_log order by id`).toEqual(audit)
    // A partition per day from the oldest row's (400 days of them), so retention can drop them one by one.
    expect((await listPartitions(sql, 'process_events')).length).toBeGreaterThan(400)
    const [next] = await sql<{ id: number }[]>`insert into process_events (process_id, status) values (${id}, 'running') returning id`
    expect(next!.id).toBeGreaterThan(Math.max(...events.map((e) => e.id as number)))
  })

  it('lets retention drop the old days it brought over', async () => {
    const pass = await job(sql).runOnce()
    expect(pass.partitionsDropped.process_events).toBeGreaterThan(360)
    const rows = await sql`select message from process_events order by id`
    expect(rows.map((r) => r.message)).toEqual(['today', null])
    await db.close()
  })
})

describe('retention', async () => {
  const { db } = await testDatabase()
  const { sql } = db
  const tenant = await createTenant(sql)

  it('drops partitions whose whole range is past the retention, and keeps the rest', async () => {
    const id = await insertProcess(sql, tenant.workspaceId, 'waiting_review', null)
    await createPartition(sql, 'process_events', new Date('2022-05-01T00:00:00Z'), new Date('2022-05-02T00:00:00Z'))
    await createPartition(sql, 'audit_log', new Date('2022-05-01T00:00:00Z'), new Date('2022-05-02T00:00:00Z'))
    await sql`insert into process_events (process_id, status, message, created_at) values (${id}, 'pending', 'old', '2022-05-01T08:00:00Z')`
    await sql`insert into process_events (process_id, status, message) values (${id}, 'waiting_review', 'recent')`
    await sql`insert into audit_log (method, route, status, created_at) values ('GET', '/old', 200, '2022-05-01T08:00:00Z')`
    await sql`insert into audit_log (method, route, status) values ('GET', '/recent', 200)`

    const pass = await job(sql).runOnce()
    expect(pass.ran).toBe(true)
    expect(pass.partitionsDropped).toEqual({ audit_log: 1, process_events: 1 })
    expect((await sql`select message from process_events where process_id = ${id}`).map((r) => r.message)).toEqual(['recent'])
    expect((await sql`select route from audit_log`).map((r) => r.route)).toEqual(['/recent'])
    // The process itself is waiting for review: never pruned.
    expect(await sql`select id from processes where id = ${id}`).toHaveLength(1)
  })

  it('keeps creating partitions ahead of time, of the configured width', async () => {
    const hour = 3_600_000
    const now = new Date(Date.now() + 10 * DAY_MS) // past the migration's days, so new ones are needed
    const pass = await job(sql, { partitionMs: hour, aheadMs: 3 * hour }).runOnce(now)
    expect(pass.partitionsCreated.process_events).toBeGreaterThanOrEqual(3)
    const partitions = await listPartitions(sql, 'process_events')
    const last = partitions.at(-1)!
    expect(last.to.getTime() - last.from.getTime()).toBe(hour)
    expect(last.to.getTime()).toBeGreaterThanOrEqual(now.getTime() + 3 * hour)
    // The new ones are contiguous: each starts where the one before it ended.
    const hourly = partitions.filter((p) => p.to.getTime() - p.from.getTime() === hour)
    expect(hourly.length).toBe(pass.partitionsCreated.process_events)
    for (let i = 1; i < hourly.length; i++) expect(hourly[i]!.from.getTime()).toBe(hourly[i - 1]!.to.getTime())
    // Run again at the same moment: nothing more to make.
    expect((await job(sql, { partitionMs: hour, aheadMs: 3 * hour }).runOnce(now)).partitionsCreated.process_events).toBe(0)
  })

  it('prunes finished processes past their status retention with their idempotency keys, and nothing else', async () => {
    const old = daysAgo(8)
    const doomed = [await insertProcess(sql, tenant.workspaceId, 'completed', old), await insertProcess(sql, tenant.workspaceId, 'cancelled', old)]
    const failedOld = await insertProcess(sql, tenant.workspaceId, 'failed', old)
    const kept = [
      await insertProcess(sql, tenant.workspaceId, 'completed', daysAgo(1)),
      await insertProcess(sql, tenant.workspaceId, 'waiting_review', null),
      await insertProcess(sql, tenant.workspaceId, 'pending', null),
      await insertProcess(sql, tenant.workspaceId, 'running', null),
      failedOld,
    ]
    // Old processes in statuses retention never touches, whatever their age says.
    await sql`update processes set created_at = now() - interval '400 days', updated_at = now() - interval '400 days' where id = any(${kept}::bigint[])`
    for (const id of [...doomed, kept[0]!]) {
      await sql`insert into idempotency_keys (user_id, key, process_id, response) values (${tenant.userId}, ${`k${id}`}, ${id}, '{}')`
    }

    const pass = await job(sql, { processDays: { completed: 7, cancelled: 7, failed: 0 } }).runOnce()
    expect(pass.processesDeleted).toBe(2)
    const left = (await sql<{ id: number }[]>`select id from processes where id = any(${[...doomed, ...kept]}::bigint[]) order by id`).map((r) => r.id)
    expect(left).toEqual([...kept].sort((a, b) => a - b))
    const keys = (await sql`select key from idempotency_keys where user_id = ${tenant.userId} order by key`).map((r) => r.key)
    expect(keys).toEqual([`k${kept[0]}`])

    // With a failed retention set, the old failed one goes too.
    expect((await job(sql, { processDays: { completed: 7, cancelled: 7, failed: 7 } }).runOnce()).processesDeleted).toBe(1)
    expect(await sql`select id from processes where id = ${failedOld}`).toHaveLength(0)
  })

  it('prunes idempotency keys older than 24 hours, keeping the process', async () => {
    const id = await insertProcess(sql, tenant.workspaceId, 'pending', null)
    await sql`insert into idempotency_keys (user_id, key, process_id, response, created_at)
              values (${tenant.userId}, 'stale', ${id}, '{}', now() - interval '25 hours'),
                     (${tenant.userId}, 'fresh', ${id}, '{}', now() - interval '23 hours')`
    expect((await job(sql).runOnce()).idempotencyKeysDeleted).toBe(1)
    expect((await sql`select key from idempotency_keys where process_id = ${id}`).map((r) => r.key)).toEqual(['fresh'])
    expect(await sql`select id from processes where id = ${id}`).toHaveLength(1)
  })

  it('reads its settings from the environment, per status where given', () => {
    const s = retentionSettings(testConfig({ RETENTION_DAYS: '14', RETENTION_DAYS_FAILED: '0.5', EVENT_RETENTION_DAYS: '21' }))
    expect(s.processDays).toEqual({ completed: 14, failed: 0.5, cancelled: 14 })
    expect(s.eventDays).toBe(21)
    expect(s.auditDays).toBe(90)
  })
})

describe("partitions narrower than the migration's days", async () => {
  const { db } = await testDatabase()
  const { sql } = db
  const minute = 60_000
  const widths = (partitions: { from: Date; to: Date }[]) => partitions.map((p) => p.to.getTime() - p.from.getTime())

  it('keeps a wide partition that holds rows, and replaces only the empty ones after it', async () => {
    // A fresh database: the migration's days, all empty; a row in audit_log's today.
    await sql`insert into audit_log (method, route, status) values ('GET', '/today', 200)`
    const today = (await listPartitions(sql, 'audit_log')).find((p) => p.from.getTime() <= Date.now() && Date.now() < p.to.getTime())!
    expect(today.to.getTime() - today.from.getTime()).toBe(DAY_MS)
    const hour = 3_600_000
    // An hour before today's partition ends, so the next ones (three hours ahead) are due.
    await job(sql, { partitionMs: hour, aheadMs: 3 * hour }).runOnce(new Date(today.to.getTime() - hour))
    const partitions = await listPartitions(sql, 'audit_log')
    expect(partitions.map((p) => p.name)).toContain(today.name)
    const after = partitions.filter((p) => p.from.getTime() >= today.to.getTime())
    expect(after.length).toBe(2)
    expect(after[0]!.from.getTime()).toBe(today.to.getTime())
    expect(widths(after).every((w) => w === hour)).toBe(true)
    expect((await sql`select route from audit_log`).map((r) => r.route)).toEqual(['/today'])
  })

  it('replaces the empty daily partitions that have not ended with ones of the configured width, so recent rows go by the minute', async () => {
    // A fresh database: the migration's days are empty.
    const now = new Date()
    const pass = await job(sql, { partitionMs: minute, aheadMs: 3 * minute, eventDays: 1 / 1440 }).runOnce(now)
    expect(pass.partitionsCreated.process_events).toBeGreaterThanOrEqual(3)
    const current = (await listPartitions(sql, 'process_events')).filter((p) => p.to.getTime() > now.getTime())
    expect(widths(current).every((w) => w === minute)).toBe(true)
    expect(current[0]!.from.getTime()).toBeLessThanOrEqual(now.getTime())
    for (let i = 1; i < current.length; i++) expect(current[i]!.from.getTime()).toBe(current[i - 1]!.to.getTime())

    // A row written now lands in a minute partition, and goes once that minute is past the retention.
    const tenant = await createTenant(sql)
    const id = await insertProcess(sql, tenant.workspaceId, 'waiting_review', null)
    await sql`insert into process_events (process_id, status, message) values (${id}, 'waiting_review', 'now')`
    const [where] = await sql<{ name: string }[]>`select tableoid::regclass::text as name from process_events where process_id = ${id}`
    expect(current.map((p) => p.name)).toContain(where!.name)
    const later = new Date(now.getTime() + 3 * minute)
    const dropper = job(sql, { partitionMs: minute, aheadMs: 3 * minute, eventDays: 1 / 1440 })
    const after = await dropper.runOnce(later)
    expect(after.partitionsDropped.process_events).toBeGreaterThanOrEqual(1)
    // Never analyzed (reltuples -1): its row is counted, not estimated as none.
    expect(dropper.totals.rows_dropped.process_events).toBe(1)
    expect(await sql`select 1 from process_events where process_id = ${id}`).toHaveLength(0)
  })

  it('names partitions under a minute wide apart, and makes them', async () => {
    expect(partitionName('audit_log', new Date('2026-12-02T14:04:00Z'))).toBe('audit_log_p20261202_1404')
    expect(partitionName('audit_log', new Date('2026-12-02T14:04:20Z'))).toBe('audit_log_p20261202_140420')
    expect(partitionName('audit_log', new Date('2026-12-02T14:04:20.500Z'))).toBe('audit_log_p20261202_140420_500')
    const now = new Date(Date.now() + 20 * DAY_MS)
    const pass = await job(sql, { partitionMs: 20_000, aheadMs: 120_000 }).runOnce(now)
    // Past everything made so far: 20-second slots from now's to two minutes ahead (6, or 7 when now is not on one).
    expect(pass.partitionsCreated.audit_log).toBeGreaterThanOrEqual(6)
    expect(pass.partitionsCreated.process_events).toBe(pass.partitionsCreated.audit_log)
    const last = (await listPartitions(sql, 'audit_log')).at(-1)!
    expect(last.to.getTime() - last.from.getTime()).toBe(20_000)
  })
})

describe.skipIf(!hasPostgres)('retention on several instances', async () => {
  // bun runs a skipped describe's body too: without Postgres there is nothing to open.
  if (!hasPostgres) return
  const url = await freshDatabaseUrl()
  const a = await openDatabase({ url, dataDir: '', poolMax: 4 })
  const b = await openDatabase({ url, dataDir: '', poolMax: 4 })
  await migrate(a.sql)
  const tenant = await createTenant(a.sql)

  it('skips every step while another instance holds the retention lock, then does the work once', async () => {
    const ids: number[] = []
    for (let i = 0; i < 30; i++) ids.push(await insertProcess(a.sql, tenant.workspaceId, 'completed', daysAgo(10)))
    const { promise: release, resolve } = Promise.withResolvers<void>()
    const { promise: held, resolve: holding } = Promise.withResolvers<void>()
    const holder = b.sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(${0x70726f64})`
      holding()
      await release
    })
    await held
    const blocked = await job(a.sql).runOnce()
    expect(blocked.ran).toBe(false)
    expect(blocked.processesDeleted).toBe(0)
    expect(await a.sql`select id from processes where id = any(${ids}::bigint[])`).toHaveLength(30)
    resolve()
    await holder

    // Both at once: between them every process is deleted exactly once, and neither fails. A step one
    // skips because the other holds the lock for another step waits for the next pass (each may skip the
    // delete step when they interleave), so passes go on, both at once, until none is left.
    let deleted = 0
    for (let round = 0; round < 20; round++) {
      const [x, y] = await Promise.all([job(a.sql).runOnce(), job(b.sql).runOnce()])
      deleted += x.processesDeleted + y.processesDeleted
      if ((await a.sql`select id from processes where id = any(${ids}::bigint[])`).length === 0) break
    }
    expect(deleted).toBe(30)
    expect(await a.sql`select id from processes where id = any(${ids}::bigint[])`).toHaveLength(0)
    await a.close()
    await b.close()
  })
})

describe('storage metrics', async () => {
  const { db } = await testDatabase()
  const running = await listeningServer({ RETENTION_INTERVAL_MS: '200' }, db)
  const tenant = await createTenant(db.sql)

  it('reports table sizes, dead tuples, the oldest pending age and what retention pruned', async () => {
    await insertProcess(db.sql, tenant.workspaceId, 'pending', null)
    await db.sql`update processes set created_at = now() - interval '1 hour', run_at = now() - interval '1 hour' where workspace_id = ${tenant.workspaceId}`
    await insertProcess(db.sql, tenant.workspaceId, 'completed', daysAgo(100))
    // The server's own retention loop (every 200 ms here) prunes the old completed one.
    let text = ''
    const value = (name: string) => Number(new RegExp(`^${name.replace(/[{}"]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text)?.[1])
    await waitFor(async () => {
      text = await (await fetch(running.metricsUrl!)).text()
      return value('processes_retention_rows_pruned_total{table="processes"}') >= 1
    }, 20_000)
    expect(value('processes_table_bytes{table="process_events"}')).toBeGreaterThan(0)
    expect(value('processes_table_bytes{table="processes"}')).toBeGreaterThan(0)
    expect(value('processes_table_dead_rows{table="processes"}')).toBeGreaterThanOrEqual(0)
    expect(value('processes_oldest_pending_seconds')).toBeGreaterThanOrEqual(3500)
    expect(value('processes_retention_passes_total')).toBeGreaterThanOrEqual(1)
    expect(await db.sql`select id from processes where workspace_id = ${tenant.workspaceId} and status = 'completed'`).toHaveLength(0)
  })
})

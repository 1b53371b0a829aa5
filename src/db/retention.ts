// Retention: what keeps a busy deployment's storage bounded. Every instance runs one RetentionJob. Each step is
// a short transaction under a transaction-scoped advisory lock: a pass starts only if its first step gets the
// lock at once (otherwise another instance is at work and this one skips), and nothing is held between steps
// (PGlite serialises transactions: none may stay open long).
//
// Per pass, for audit_log and process_events (range-partitioned on created_at, sql/005_storage.sql): create
// partitions ahead of now, drop the partitions whose whole range is past the table's retention. Then delete
// finished processes past theirs (in batches, with their idempotency keys), and idempotency keys past 24 h.
// Dropping a partition is the one way rows leave process_events: its trigger refuses update, delete, truncate.
// Where no autovacuum runs, the job also vacuums processes and idempotency_keys itself, checking their dead
// tuples every few seconds (vacuumDue), not only once a pass.
import { type Config, type RetainedStatus, retentionDays } from '../config'
import type { Logger } from '../ops/log'
import { BackgroundLoop } from '../ops/loop'
import type { RetentionCounts, StorageSample } from '../ops/metrics'
import type { Sql } from './client'

const DAY_MS = 86_400_000
/** "processes" + 1: the migration lock is 0x70726f63. */
const RETENTION_LOCK_ID = 0x70726f64
/** Rows per delete statement: each stays a short transaction (~10–30 ms on this machine). */
const DELETE_BATCH = 2000
/** A pass deletes at most this many batches per kind; the rest waits for the next pass. */
const MAX_BATCHES_PER_PASS = 50
/** Idempotency keys answer repeats within 24 h (POST /processes); older ones only take space. */
const IDEMPOTENCY_TTL_MS = DAY_MS
/** DDL waits this long for its lock, then gives up until the next pass instead of queueing every query behind it. */
const DDL_LOCK_TIMEOUT_MS = 2000
/**
 * How often the dead tuples of the vacuumed tables are looked at (where no autovacuum runs), whatever the
 * retention interval. The wait between checks, more than the vacuum, is what lets dead versions pile up (which
 * the table then keeps as pages): at 2,800 jobs/s a soak makes ~8,500 a second, a vacuum of its ~70 MiB
 * `processes` took 0.6 s, and with checks 5 s apart they peaked at 54,000.
 */
export const VACUUM_CHECK_MS = 2000
/**
 * Analyze (the planner's statistics) at most this often per table, as autovacuum's default naptime would: on a
 * 100,000-row `processes` a vacuum took 44–68 ms and `vacuum (analyze)` 290–410 ms, so analyzing with every
 * vacuum made each one five times as long and let dead rows pile up behind it on a busy machine.
 */
export const ANALYZE_MIN_INTERVAL_MS = 60_000
/** The tables whose dead versions this job reclaims where no autovacuum does (process_events and audit_log lose rows only by partition drops). */
export const VACUUMED_TABLES = ['processes', 'idempotency_keys'] as const

export const PARTITIONED_TABLES = ['audit_log', 'process_events'] as const
export type PartitionedTable = (typeof PARTITIONED_TABLES)[number]
const RETAINED: readonly RetainedStatus[] = ['completed', 'failed', 'cancelled']

export interface Partition {
  name: string
  from: Date
  to: Date
}

export interface RetentionSettings {
  /** Days per status; 0 keeps forever. */
  processDays: Record<RetainedStatus, number>
  eventDays: number
  auditDays: number
  partitionMs: number
  /** Partitions are created this far ahead of now. */
  aheadMs: number
}

export function retentionSettings(config: Config): RetentionSettings {
  return {
    processDays: { completed: retentionDays(config, 'completed'), failed: retentionDays(config, 'failed'), cancelled: retentionDays(config, 'cancelled') },
    eventDays: config.EVENT_RETENTION_DAYS,
    auditDays: config.AUDIT_RETENTION_DAYS,
    partitionMs: config.PARTITION_INTERVAL_MS,
    // Several passes' worth, so a missed pass or two never leaves inserts to the default partition.
    aheadMs: Math.max(3 * config.PARTITION_INTERVAL_MS, 3 * config.RETENTION_INTERVAL_MS),
  }
}

export interface PassResult {
  /** False when another instance held the lock for every step. */
  ran: boolean
  partitionsCreated: Record<PartitionedTable, number>
  partitionsDropped: Record<PartitionedTable, number>
  processesDeleted: number
  idempotencyKeysDeleted: number
}

export class RetentionJob {
  private readonly loop: BackgroundLoop
  private readonly vacuumLoop: BackgroundLoop
  /** When this job last analyzed each table (ANALYZE_MIN_INTERVAL_MS). */
  private readonly analyzedAt = new Map<string, number>()
  /** The vacuum check in progress, so the loop's and a pass's never overlap on one instance. */
  private vacuuming: Promise<void> | null = null
  /** What retention did since start, for /metrics. */
  readonly totals: RetentionCounts = {
    partitions_created: { audit_log: 0, process_events: 0 },
    partitions_dropped: { audit_log: 0, process_events: 0 },
    rows_dropped: { audit_log: 0, process_events: 0 },
    processes_deleted: 0,
    idempotency_keys_deleted: 0,
    passes: 0,
    errors: 0,
    vacuums: 0,
    vacuum_seconds: 0,
  }

  constructor(
    private readonly sql: Sql,
    private readonly settings: RetentionSettings,
    private readonly log: Logger,
    intervalMs: number,
  ) {
    this.loop = new BackgroundLoop(
      'retention pass',
      log,
      intervalMs,
      () => this.pass(),
      () => this.totals.errors++,
    )
    this.vacuumLoop = new BackgroundLoop(
      'retention vacuum',
      log,
      Math.min(intervalMs, VACUUM_CHECK_MS),
      () => this.vacuumWhereDue(),
      () => this.totals.errors++,
    )
  }

  start() {
    this.loop.start()
    this.vacuumLoop.start()
  }

  async stop() {
    await Promise.all([this.loop.stop(), this.vacuumLoop.stop()])
  }

  private async pass() {
    const pass = await this.runOnce()
    if (pass.processesDeleted + pass.idempotencyKeysDeleted > 0 || Object.values(pass.partitionsDropped).some((n) => n > 0)) {
      this.log.info('retention pass', { ...pass })
    }
  }

  /** One pass, as the loop runs it; `now` is for tests. */
  async runOnce(now = new Date()): Promise<PassResult> {
    const s = this.settings
    const result: PassResult = {
      ran: false,
      partitionsCreated: { audit_log: 0, process_events: 0 },
      partitionsDropped: { audit_log: 0, process_events: 0 },
      processesDeleted: 0,
      idempotencyKeysDeleted: 0,
    }
    // The first step only tries the lock: another instance in the middle of a pass has it, and this one skips
    // its pass. Once begun, each step waits for the lock (an instance that began meanwhile takes turns with it:
    // every step is safe to repeat), so a begun pass is never cut short by another one.
    const locked = <T>(fn: (tx: Sql) => Promise<T>) => this.locked(fn, result.ran)
    for (const table of PARTITIONED_TABLES) {
      const days = table === 'audit_log' ? s.auditDays : s.eventDays
      const step = await locked(async (tx) => {
        const created = await createPartitionsAhead(tx, table, now, s.partitionMs, s.aheadMs, this.log)
        const dropped = days > 0 ? await dropPartitionsBefore(tx, table, new Date(now.getTime() - days * DAY_MS)) : { count: 0, rows: 0 }
        return { created, dropped }
      })
      if (!step) return result
      result.ran = true
      result.partitionsCreated[table] = step.created
      result.partitionsDropped[table] = step.dropped.count
      this.totals.partitions_created[table] += step.created
      this.totals.partitions_dropped[table] += step.dropped.count
      this.totals.rows_dropped[table] += step.dropped.rows
    }
    for (const status of RETAINED) {
      const days = s.processDays[status]
      if (days <= 0) continue
      const before = new Date(now.getTime() - days * DAY_MS)
      for (let i = 0; i < MAX_BATCHES_PER_PASS; i++) {
        const n = (await locked((tx) => deleteFinishedProcesses(tx, status, before, DELETE_BATCH)))!
        result.processesDeleted += n
        this.totals.processes_deleted += n
        if (n < DELETE_BATCH) break
      }
    }
    const keysBefore = new Date(now.getTime() - IDEMPOTENCY_TTL_MS)
    for (let i = 0; i < MAX_BATCHES_PER_PASS; i++) {
      const n = (await locked((tx) => deleteIdempotencyKeysBefore(tx, keysBefore, DELETE_BATCH)))!
      result.idempotencyKeysDeleted += n
      this.totals.idempotency_keys_deleted += n
      if (n < DELETE_BATCH) break
    }
    // Deletes are when dead tuples jump: looked at now rather than at the next check.
    if (result.processesDeleted + result.idempotencyKeysDeleted > 0) await this.vacuumWhereDue()
    this.totals.passes++
    return result
  }

  /**
   * Without autovacuum (off, as on this project's CI machine, or the embedded PGlite, which has no launcher)
   * nothing reclaims the rows deleted here or the versions every claim, progress and completion leave behind:
   * a soak on a server with autovacuum off saw the processes table grow 14× over 20,000 jobs with 76,000 dead
   * tuples. Then this job vacuums each table whose dead tuples passed autovacuum's own threshold for it (see
   * vacuumDue). `skip_locked`: a table another instance is vacuuming is not waited for. Returns when done.
   */
  vacuumWhereDue(): Promise<void> {
    this.vacuuming ??= (async () => {
      for (const due of await vacuumDue(this.sql)) {
        if (due.autovacuum) continue
        const vacuum = due.dead > due.threshold
        // Statistics where autovacuum would refresh them (its analyze threshold), at most once a minute.
        const analyze = due.modified > due.analyzeThreshold && Date.now() - (this.analyzedAt.get(due.table) ?? 0) >= ANALYZE_MIN_INTERVAL_MS
        if (!vacuum && !analyze) continue
        const table = due.table === 'processes' ? 'processes' : 'idempotency_keys'
        const started = performance.now()
        try {
          await this.sql.unsafe(vacuum ? `vacuum (skip_locked${analyze ? ', analyze' : ''}) ${table}` : `analyze (skip_locked) ${table}`)
          if (analyze) this.analyzedAt.set(due.table, Date.now())
          if (vacuum) this.totals.vacuums++
          this.totals.vacuum_seconds += (performance.now() - started) / 1000
        } catch (error) {
          this.log.warn('retention vacuum failed', { table: due.table, error: String(error) })
        }
      }
    })().finally(() => {
      this.vacuuming = null
    })
    return this.vacuuming
  }

  /** fn in a transaction holding the retention lock: waiting for it, or null (nothing run) when it is taken. */
  private locked<T>(fn: (tx: Sql) => Promise<T>, wait: boolean): Promise<T | null> {
    return this.sql.begin(async (tx) => {
      if (wait) {
        await tx`select pg_advisory_xact_lock(${RETENTION_LOCK_ID})`
        return fn(tx)
      }
      const [row] = await tx<{ locked: boolean }[]>`select pg_try_advisory_xact_lock(${RETENTION_LOCK_ID}) as locked`
      return row!.locked ? fn(tx) : null
    })
  }
}

// ---------------------------------------------------------------------------------------------
// SQL. Partition names are `<table>_p<YYYYMMDD>_<HHMM>[SS[_mmm]]` (UTC start); only names built here reach `unsafe`.

/** The table's range partitions (not the default one), oldest first. */
export async function listPartitions(sql: Sql, table: PartitionedTable): Promise<Partition[]> {
  const rows = await sql<{ name: string; bound: string }[]>`
    select c.relname as name, pg_get_expr(c.relpartbound, c.oid) as bound
      from pg_inherits i join pg_class c on c.oid = i.inhrelid
     where i.inhparent = ${table}::regclass`
  const partitions: Partition[] = []
  for (const row of rows) {
    const m = /FROM \('([^']+)'\) TO \('([^']+)'\)/.exec(row.bound)
    if (m) partitions.push({ name: row.name, from: new Date(m[1]!), to: new Date(m[2]!) })
  }
  return partitions.sort((a, b) => a.from.getTime() - b.from.getTime())
}

/** Seconds (and milliseconds) are added when not zero: PARTITION_INTERVAL_MS may be under a minute. */
export function partitionName(table: PartitionedTable, from: Date): string {
  const iso = from.toISOString() // 2026-12-02T13:00:00.000Z
  const seconds = iso.slice(17, 19) === '00' && iso.slice(20, 23) === '000' ? '' : iso.slice(17, 19)
  const ms = iso.slice(20, 23) === '000' ? '' : `_${iso.slice(20, 23)}`
  return `${table}_p${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}_${iso.slice(11, 13)}${iso.slice(14, 16)}${seconds}${ms}`
}

/** One partition [from, to); for process_events with its own truncate guard (statement triggers are not cloned). */
export async function createPartition(sql: Sql, table: PartitionedTable, from: Date, to: Date): Promise<string> {
  const name = partitionName(table, from)
  await sql.unsafe(`set local lock_timeout = ${DDL_LOCK_TIMEOUT_MS}`)
  await sql.unsafe(`create table ${name} partition of ${table} for values from ('${from.toISOString()}') to ('${to.toISOString()}')`)
  if (table === 'process_events') {
    await sql.unsafe(`create trigger process_events_no_truncate before truncate on ${name} for each statement execute function process_events_append_only()`)
  }
  return name
}

/**
 * Partitions of `widthMs` (aligned to multiples of it since the epoch) from the end of the newest one — or from
 * now's slot when there is none, or when the newest ended in the past — until `aheadMs` past now.
 */
async function createPartitionsAhead(sql: Sql, table: PartitionedTable, now: Date, widthMs: number, aheadMs: number, log: Logger): Promise<number> {
  const partitions = await replaceWideEmptyPartitions(sql, table, now, widthMs)
  const slot = Math.floor(now.getTime() / widthMs) * widthMs
  let from = Math.max(slot, partitions.at(-1)?.to.getTime() ?? 0)
  let created = 0
  while (from < now.getTime() + aheadMs) {
    // The first one ends on the grid, so partitions left by another width (the migration's days) join up.
    const to = (Math.floor(from / widthMs) + 1) * widthMs
    // Rows already in the default partition for this range would make the create fail (and the append-only
    // rule forbids moving them): leave that slot to the default partition.
    if (await hasDefaultRows(sql, table, new Date(from), new Date(to)))
      log.warn('rows in the default partition; that range stays there', { table, from: new Date(from).toISOString() })
    else {
      await createPartition(sql, table, new Date(from), new Date(to))
      created++
    }
    from = to
  }
  if (created > 0) log.debug('partitions created', { table, created })
  return created
}

/**
 * Partitions wider than `widthMs` that have not ended yet and hold no row (the migration's days, three ahead,
 * when PARTITION_INTERVAL_MS is shorter) are dropped, so the grid of `widthMs` replaces them: otherwise the
 * first four days' events could only go a whole day at a time. Each found empty is locked (inserts wait),
 * checked again, and dropped in the same transaction as the creation of its replacements, so no insert lands
 * in the default partition in between. Returns the partitions left, oldest first.
 */
async function replaceWideEmptyPartitions(sql: Sql, table: PartitionedTable, now: Date, widthMs: number): Promise<Partition[]> {
  const partitions = await listPartitions(sql, table)
  const wide = partitions.filter((p) => p.to.getTime() > now.getTime() && p.to.getTime() - p.from.getTime() > widthMs)
  if (wide.length === 0) return partitions
  await sql.unsafe(`set local lock_timeout = ${DDL_LOCK_TIMEOUT_MS}`)
  const dropped = new Set<string>()
  // Newest first: a non-empty one stops it, so what is left stays contiguous up to it.
  for (const p of [...wide].reverse()) {
    // Looked at first without the lock, so a day that holds rows is not locked (inserts stopped) every pass.
    if (await hasRows(sql, table, p.from, p.to)) break
    await sql.unsafe(`lock table ${p.name} in access exclusive mode`)
    if (await hasRows(sql, table, p.from, p.to)) break
    await sql.unsafe(`drop table ${p.name}`)
    dropped.add(p.name)
  }
  return partitions.filter((p) => !dropped.has(p.name))
}

async function countRows(sql: Sql, table: PartitionedTable, from: Date, to: Date): Promise<number> {
  const [row] =
    table === 'audit_log'
      ? await sql<{ n: number }[]>`select count(*)::float8 as n from audit_log where created_at >= ${from} and created_at < ${to}`
      : await sql<{ n: number }[]>`select count(*)::float8 as n from process_events where created_at >= ${from} and created_at < ${to}`
  return Number(row?.n ?? 0)
}

/** Rows in [from, to) of the table (pruning reads just that range's partition). */
async function hasRows(sql: Sql, table: PartitionedTable, from: Date, to: Date): Promise<boolean> {
  const rows =
    table === 'audit_log'
      ? await sql`select 1 from audit_log where created_at >= ${from} and created_at < ${to} limit 1`
      : await sql`select 1 from process_events where created_at >= ${from} and created_at < ${to} limit 1`
  return rows.length > 0
}

async function hasDefaultRows(sql: Sql, table: PartitionedTable, from: Date, to: Date): Promise<boolean> {
  const rows =
    table === 'audit_log'
      ? await sql`select 1 from audit_log_default where created_at >= ${from} and created_at < ${to} limit 1`
      : await sql`select 1 from process_events_default where created_at >= ${from} and created_at < ${to} limit 1`
  return rows.length > 0
}

/** Drops the partitions whose whole range ends at or before `before`; returns how many, and their rows (estimated). */
async function dropPartitionsBefore(sql: Sql, table: PartitionedTable, before: Date): Promise<{ count: number; rows: number }> {
  const old = (await listPartitions(sql, table)).filter((p) => p.to.getTime() <= before.getTime())
  if (old.length === 0) return { count: 0, rows: 0 }
  const estimates = await sql<{ name: string; rows: number }[]>`
    select relname as name, reltuples::float8 as rows from pg_class where relname = any(${old.map((p) => p.name)}::text[])`
  let rows = 0
  for (const p of old) {
    const estimate = Number(estimates.find((e) => e.name === p.name)?.rows ?? -1)
    // -1: never analyzed (a narrow partition often is not before it goes); count it, its range is closed.
    rows += estimate >= 0 ? estimate : await countRows(sql, table, p.from, p.to)
  }
  await sql.unsafe(`set local lock_timeout = ${DDL_LOCK_TIMEOUT_MS}`)
  for (const p of old) await sql.unsafe(`drop table ${p.name}`)
  return { count: old.length, rows: Math.round(rows) }
}

/** One batch of finished processes of a status that finished before `before`, with their idempotency keys. */
export async function deleteFinishedProcesses(sql: Sql, status: RetainedStatus, before: Date, limit: number): Promise<number> {
  const doomed = await sql<{ id: number }[]>`
    select id from processes
     where status = ${status} and finished_at < ${before}
     order by finished_at
     limit ${limit}
     for update skip locked`
  if (doomed.length === 0) return 0
  const ids = doomed.map((r) => r.id)
  await sql`delete from idempotency_keys where process_id = any(${ids}::bigint[])`
  // The status guard again: a process retried in the meantime is not finished any more.
  const deleted = await sql`delete from processes where id = any(${ids}::bigint[]) and status = ${status} returning id`
  return deleted.length
}

export async function deleteIdempotencyKeysBefore(sql: Sql, before: Date, limit: number): Promise<number> {
  const rows = await sql`
    delete from idempotency_keys k
     using (select user_id, key from idempotency_keys where created_at < ${before} limit ${limit}) old
     where k.user_id = old.user_id and k.key = old.key
    returning 1`
  return rows.length
}

export interface VacuumDue {
  table: (typeof VACUUMED_TABLES)[number]
  dead: number
  /** Autovacuum's threshold for the table: its reloptions (sql/007_processes_vacuum.sql) or the server's settings. */
  threshold: number
  /** Whether an autovacuum worker will vacuum this table. */
  autovacuum: boolean
  /** Rows changed since the table was last analyzed, and autovacuum's analyze threshold for it. */
  modified: number
  analyzeThreshold: number
}

/**
 * Per vacuumed table: its dead tuples, autovacuum's threshold for it (threshold + scale factor × reltuples,
 * the table's own settings first), and whether autovacuum covers it: `autovacuum` and `track_counts` on (the
 * launcher starts only with both), the table's `autovacuum_enabled` not false, and not a single-user backend
 * (PGlite runs Postgres as one: the setting says on, but there is no launcher). The settings, not a look for
 * the launcher in pg_stat_activity: a role without pg_read_all_stats sees no other backend's type there.
 */
export async function vacuumDue(sql: Sql): Promise<VacuumDue[]> {
  const rows = await sql<VacuumDue[]>`
    select c.relname as table,
           coalesce(s.n_dead_tup, 0)::float8 as dead,
           (coalesce(o.threshold, current_setting('autovacuum_vacuum_threshold')::float8)
              + coalesce(o.scale, current_setting('autovacuum_vacuum_scale_factor')::float8) * greatest(c.reltuples, 0))::float8 as threshold,
           coalesce(s.n_mod_since_analyze, 0)::float8 as modified,
           (coalesce(o.analyze_threshold, current_setting('autovacuum_analyze_threshold')::float8)
              + coalesce(o.analyze_scale, current_setting('autovacuum_analyze_scale_factor')::float8) * greatest(c.reltuples, 0))::float8 as "analyzeThreshold",
           (current_setting('autovacuum')::bool and current_setting('track_counts')::bool and coalesce(o.enabled, true)
              and not exists (select 1 from pg_stat_activity where backend_type = 'standalone backend')) as autovacuum
      from pg_class c
      left join pg_stat_user_tables s on s.relid = c.oid
      cross join lateral (
        select (max(option_value) filter (where option_name = 'autovacuum_vacuum_threshold'))::float8 as threshold,
               (max(option_value) filter (where option_name = 'autovacuum_vacuum_scale_factor'))::float8 as scale,
               (max(option_value) filter (where option_name = 'autovacuum_enabled'))::bool as enabled,
               (max(option_value) filter (where option_name = 'autovacuum_analyze_threshold'))::float8 as analyze_threshold,
               (max(option_value) filter (where option_name = 'autovacuum_analyze_scale_factor'))::float8 as analyze_scale
          from pg_options_to_table(c.reloptions)
      ) o
     where c.oid = any(${[...VACUUMED_TABLES]}::text[]::regclass[])
     order by c.relname`
  return rows.map((r) => ({
    ...r,
    dead: Number(r.dead),
    threshold: Number(r.threshold),
    modified: Number(r.modified),
    analyzeThreshold: Number(r.analyzeThreshold),
  }))
}

const MEASURED_TABLES = ['processes', 'process_events', 'audit_log', 'idempotency_keys']

/** The storage metrics' sample: one catalog query (a partitioned table's partitions summed into it). */
export async function sampleStorage(sql: Sql): Promise<StorageSample> {
  const tables = await sql<StorageSample['tables']>`
    select t.name,
           coalesce(sum(pg_total_relation_size(p.relid)), 0)::bigint as bytes,
           coalesce(sum(s.n_live_tup), 0)::bigint as live_rows,
           coalesce(sum(s.n_dead_tup), 0)::bigint as dead_rows
      from unnest(${MEASURED_TABLES}::text[]) as t(name)
      -- pg_partition_tree is empty for a table that is not partitioned: the table itself, then its partitions.
      cross join lateral (select t.name::regclass as relid union select relid from pg_partition_tree(t.name::regclass)) p
      left join pg_stat_user_tables s on s.relid = p.relid
     group by t.name
     order by t.name`
  // `run_at > '-infinity'`: processes_pending_run_at_idx's predicate (sql/008_claim_plan.sql).
  const [pending] = await sql<{ s: number }[]>`
    select coalesce(extract(epoch from now() - min(run_at)), 0)::float8 as s
      from processes where status = 'pending' and run_at > '-infinity' and run_at <= now()`
  return { tables: [...tables], oldest_pending_s: Number(pending?.s ?? 0) }
}

// The audit trail. Mutations write their row inside their own transaction (writeAuditRow);
// reads, stream connects and failed authentications are batched and flushed every AUDIT_FLUSH_MS
// (≤ 250 ms) and at shutdown, so a read never waits for a database write.
import type { Sql } from '../db/client'
import type { Logger } from '../ops/log'
import type { Authenticator } from './authenticator'
import { touchTokens } from './queries'

export interface AuditRow {
  user_id: number | null
  token_id: number | null
  workspace_id: number | null
  method: string
  route: string
  status: number
  ip: string | null
  user_agent: string | null
  request_id: string | null
  created_at: string
  /** The request id is the client's X-Request-Id, not one we generated. */
  request_id_from_client?: boolean
  /** A worker socket's connect (accepted or refused): the worker token, when it was known. */
  worker_token_id?: number | null
  /** How many requests the row stands for (> 1: a flood's aggregate, see AuditLog.record). */
  count?: number
  /** What a request that stands for many changes did (a bulk action: its filter and counts). */
  details?: unknown
}

/**
 * What one audit row may hold of what a client chose: a stranger's 8 KB User-Agent or 16 KB path must not
 * become 8 KB of audit log per request. Routes are templates or `unmatched` already; the caps are
 * the second guard.
 */
export const AUDIT_MAX = { method: 16, route: 512, user_agent: 256, ip: 64, request_id: 128 } as const

const cap = (text: string | null, max: number) => (text !== null && text.length > max ? text.slice(0, max) : text)

/** The row with every client-chosen text capped (AUDIT_MAX); the same object when nothing is over. */
export function capAuditRow(row: AuditRow): AuditRow {
  if (
    row.method.length <= AUDIT_MAX.method &&
    row.route.length <= AUDIT_MAX.route &&
    (row.user_agent?.length ?? 0) <= AUDIT_MAX.user_agent &&
    (row.ip?.length ?? 0) <= AUDIT_MAX.ip &&
    (row.request_id?.length ?? 0) <= AUDIT_MAX.request_id
  )
    return row
  return {
    ...row,
    method: cap(row.method, AUDIT_MAX.method)!,
    route: cap(row.route, AUDIT_MAX.route)!,
    user_agent: cap(row.user_agent, AUDIT_MAX.user_agent),
    ip: cap(row.ip, AUDIT_MAX.ip),
    request_id: cap(row.request_id, AUDIT_MAX.request_id),
  }
}

// While the database is down rows wait in memory, up to this many; beyond it the oldest are dropped and counted.
const MAX_BUFFERED = 100_000

/**
 * One statement for any number of rows. `json`, not `jsonb`: the rows are only read once, and skipping the
 * jsonb conversion cut Postgres's CPU per row from 19 to 13 µs (2,000-row batches on this machine; an
 * `unnest` of ten arrays measured 10 µs but costs the server twice the CPU to build, COPY 6 µs but
 * postgres.js never settles a COPY that the server refuses).
 */
export async function writeAuditRows(sql: Sql, rows: AuditRow[]) {
  if (rows.length === 0) return
  await sql`
    insert into audit_log (user_id, token_id, workspace_id, method, route, status, ip, user_agent, request_id, created_at,
                           request_id_from_client, worker_token_id, count, details)
    select user_id, token_id, workspace_id, method, route, status, ip, user_agent, request_id, created_at,
           coalesce(request_id_from_client, false), worker_token_id, coalesce(count, 1), details
      from json_to_recordset(${JSON.stringify(rows.map(capAuditRow))}::text::json)
        as x(user_id bigint, token_id bigint, workspace_id bigint, method text, route text, status int,
             ip text, user_agent text, request_id text, created_at timestamptz, request_id_from_client boolean,
             worker_token_id bigint, count int, details jsonb)`
}

/**
 * A flood's rows are aggregated (2,000 random tokens wrote 2,000 rows, each with its 8 KB
 * User-Agent): failed authentications (401 with no user), refused bodies of strangers (413 with no user) and
 * refusals for rate (429). The first of each
 * (status, address, credential) in a window is written as it is; the rest of that window become one row
 * with their count, written when the window ends. At most two rows per address per window, however fast.
 */
export const AUDIT_AGGREGATE_MS = 10_000
/** Distinct floods tracked per window; past it, further ones are counted together (address null). */
const MAX_FLOODS = 10_000

/**
 * Per address (a request without one, in-process, is written as it is): 429s, and the refusals of strangers,
 * failed authentications (401) and refused bodies (413) with no user.
 */
const aggregated = (row: AuditRow) => row.ip !== null && (row.status === 429 || (row.user_id === null && (row.status === 401 || row.status === 413)))

export class AuditLog {
  private buffer: AuditRow[] = []
  /** This window's floods: the first row of each, and how many more came after it. */
  private floods = new Map<string, { row: AuditRow; more: number }>()
  private windowStartedAt = Date.now()
  private timer: Timer | null = null
  private flushing: Promise<void> | null = null
  dropped = 0
  written = 0

  constructor(
    private readonly sql: Sql,
    private readonly auth: Authenticator,
    private readonly flushMs: number,
    private readonly log: Logger,
  ) {}

  start() {
    this.timer ??= setInterval(() => void this.flush(), this.flushMs)
  }

  record(row: AuditRow) {
    if (aggregated(row)) {
      let key = `${row.status} ${row.ip} ${row.token_id} ${row.worker_token_id ?? ''}`
      if (!this.floods.has(key) && this.floods.size >= MAX_FLOODS) {
        key = `${row.status} *`
        row = { ...row, ip: null, user_agent: null }
      }
      const flood = this.floods.get(key)
      if (flood) {
        flood.more++
        return
      }
      this.floods.set(key, { row, more: 0 })
    }
    this.push(row)
  }

  private push(row: AuditRow) {
    if (this.buffer.length >= MAX_BUFFERED) {
      this.buffer.shift()
      this.dropped++
    }
    // Capped as it is kept: a buffer of 100,000 rows must not hold 100,000 long User-Agents either.
    this.buffer.push(capAuditRow(row))
  }

  get pending() {
    return this.buffer.length
  }

  /**
   * Writes everything recorded before the call: one flush at a time, so a call made while another flush is
   * writing waits for it and then writes what that one did not take. Rows stay buffered if the database is down.
   */
  async flush(force = false): Promise<void> {
    while (this.flushing) await this.flushing
    this.flushing = this.flushOnce(force).finally(() => {
      this.flushing = null
    })
    await this.flushing
  }

  /** Ends the window when it is due (or `force`): one row per flood that had more than its first. */
  private closeWindow(force: boolean) {
    const now = Date.now()
    if (!force && now - this.windowStartedAt < AUDIT_AGGREGATE_MS) return
    const floods = this.floods
    this.floods = new Map()
    this.windowStartedAt = now
    const at = new Date(now).toISOString()
    for (const { row, more } of floods.values())
      if (more > 0) this.push({ ...row, count: more, created_at: at, request_id: null, request_id_from_client: false })
  }

  private async flushOnce(force = false) {
    this.closeWindow(force)
    const rows = this.buffer
    const apiIds = [...this.auth.usedApiTokens]
    const workerIds = [...this.auth.usedWorkerTokens]
    if (rows.length === 0 && apiIds.length === 0 && workerIds.length === 0) return
    this.buffer = []
    this.auth.usedApiTokens.clear()
    this.auth.usedWorkerTokens.clear()
    try {
      await writeAuditRows(this.sql, rows)
      await touchTokens(this.sql, apiIds, workerIds)
      this.written += rows.length
    } catch (error) {
      this.buffer = rows.concat(this.buffer)
      this.log.warn('audit flush failed; rows kept for the next flush', { rows: rows.length, error: String(error) })
    }
  }

  async stop() {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
    await this.flush(true)
    if (this.buffer.length > 0) await this.flush()
  }
}

// Connected workers across instances (sql/006_workers.sql): each instance writes down its own open worker
// sockets — at once (debounced) when one opens, says hello or closes, and every REFRESH_MS while open — and
// prunes rows of instances that stopped refreshing theirs. GET /workers reads them, from any instance.
import type { Sql } from '../db/client'
import type { Logger } from '../ops/log'
import type { WorkerGateway } from './gateway'

export const REFRESH_MS = 5000
/** Rows not refreshed for this long belong to an instance that is gone. */
export const STALE_MS = 30_000
const DEBOUNCE_MS = 50

export class WorkerSessions {
  readonly instanceId = crypto.randomUUID()
  private timer: Timer | null = null
  private pending: Timer | null = null
  private syncing: Promise<void> | null = null
  private again = false
  private stopped = false

  constructor(
    private readonly sql: Sql,
    private readonly gateway: WorkerGateway,
    private readonly log: Logger,
  ) {
    gateway.onSessionsChanged = () => this.soon()
  }

  start() {
    this.timer ??= setInterval(() => void this.sync(), REFRESH_MS)
    this.timer.unref?.()
  }

  /** At shutdown: this instance's rows go (its sockets are closing with 1012). */
  async stop() {
    this.stopped = true
    if (this.timer) clearInterval(this.timer)
    if (this.pending) clearTimeout(this.pending)
    await this.syncing
    try {
      await this.sql`delete from worker_sessions where instance_id = ${this.instanceId}`
    } catch {
      // The database is down: the rows go stale and the other instances prune them.
    }
  }

  private soon() {
    if (this.stopped || this.pending) return
    this.pending = setTimeout(() => {
      this.pending = null
      void this.sync()
    }, DEBOUNCE_MS)
  }

  /** One write of every open socket of this instance; a sync asked for while one runs runs right after it. */
  async sync(): Promise<void> {
    if (this.syncing) {
      this.again = true
      return this.syncing
    }
    this.syncing = this.write()
      .catch((error) => this.log.warn('worker sessions not written', { error: String(error) }))
      .finally(() => {
        this.syncing = null
        if (this.again && !this.stopped) {
          this.again = false
          void this.sync()
        }
      })
    return this.syncing
  }

  private async write() {
    if (this.stopped) return
    const rows = [...this.gateway.openSockets].map(({ data }) => ({
      conn_id: data.connId,
      worker_id: data.workerId,
      token_id: data.tokenId,
      types: data.types,
      connected_at: new Date(data.connectedAt).toISOString(),
      last_frame_at: new Date(data.lastFrameAt).toISOString(),
    }))
    const json = JSON.stringify(rows)
    await this.sql.begin(async (tx) => {
      await tx`
        delete from worker_sessions
         where (instance_id = ${this.instanceId} and conn_id <> all(${rows.map((r) => r.conn_id)}::text[]))
            or refreshed_at < now() - ${STALE_MS} * interval '1 millisecond'`
      if (rows.length === 0) return
      await tx`
        insert into worker_sessions (conn_id, worker_id, instance_id, token_id, types, connected_at, last_frame_at, refreshed_at)
        select r.conn_id, r.worker_id, ${this.instanceId}, r.token_id,
               case when r.types is null then null else array(select jsonb_array_elements_text(r.types)) end,
               r.connected_at, r.last_frame_at, now()
          from jsonb_to_recordset(${json}::text::jsonb)
            as r(conn_id text, worker_id text, token_id bigint, types jsonb, connected_at timestamptz, last_frame_at timestamptz)
        on conflict (conn_id) do update
           set worker_id = excluded.worker_id, types = excluded.types, last_frame_at = excluded.last_frame_at, refreshed_at = now()`
    })
  }
}

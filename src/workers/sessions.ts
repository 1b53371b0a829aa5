// Connected workers across instances (sql/006_workers.sql): each instance writes down its own open worker
// sockets — at once (debounced) when one opens, says hello or closes, and every REFRESH_MS while open — and
// prunes rows of instances that stopped refreshing theirs. GET /workers reads them, from any instance.
import type { Sql } from '../db/client'
import type { Logger } from '../ops/log'
import type { WorkerGateway } from './gateway'
import { deleteSessionsOf, type SessionRow, writeSessions } from './queries'

export const REFRESH_MS = 5000
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
      await deleteSessionsOf(this.sql, this.instanceId)
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
    const rows: SessionRow[] = [...this.gateway.openSockets].map(({ data }) => ({
      conn_id: data.connId,
      worker_id: data.workerId,
      token_id: data.tokenId,
      types: data.types,
      connected_at: new Date(data.connectedAt).toISOString(),
      last_frame_at: new Date(data.lastFrameAt).toISOString(),
    }))
    await writeSessions(this.sql, this.instanceId, rows)
  }
}

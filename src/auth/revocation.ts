// Long-lived connections outlive the token look-up cache: an open worker socket or SSE stream was
// authenticated once, at connect. This registry knows which credential each one rode in on and checks them
// all against the database every half AUTH_CACHE_MS (one query per kind, however many connections), closing
// the connections of a credential that was revoked or expired — so revocation reaches open sockets and
// streams within AUTH_CACHE_MS too, not only new requests. It also counts streams per credential (the cap).
// Streams are also tracked by their user and workspace, so taking a member out of a workspace (cli
// remove-member) ends their streams of it in the same pass (one query for every open pair).
import type { Sql } from '../db/client'
import type { Logger } from '../ops/log'
import { invalidCredentials, missingMemberships } from './queries'

interface MemberStream {
  userId: number
  /** The stream's workspace; null while not known yet (a process stream before its first read). */
  workspace: () => number | null
  close: () => void
}

export type CredentialKind = 'api' | 'session' | 'worker'

const MIN_CHECK_MS = 100

export class CredentialWatch {
  private readonly open: Record<CredentialKind, Map<number, Set<() => void>>> = { api: new Map(), session: new Map(), worker: new Map() }
  private readonly members = new Set<MemberStream>()
  private timer: Timer | null = null
  private checking = false
  /** Connections closed because their credential was revoked or expired (metrics, tests). */
  closed = 0

  constructor(
    private readonly sql: Sql,
    private readonly log: Logger,
    private readonly intervalMs: number,
  ) {}

  /** Registers a connection; `close` ends it. Returns the function that forgets it (call on close). */
  track(kind: CredentialKind, id: number, close: () => void): () => void {
    const byId = this.open[kind]
    let set = byId.get(id)
    if (!set) byId.set(id, (set = new Set()))
    set.add(close)
    return () => {
      const current = byId.get(id)
      if (!current) return
      current.delete(close)
      if (current.size === 0) byId.delete(id)
    }
  }

  /** Registers a user's stream of a workspace, closed once they are no longer a member of it. Returns the untrack. */
  trackMember(userId: number, workspace: () => number | null, close: () => void): () => void {
    const entry: MemberStream = { userId, workspace, close }
    this.members.add(entry)
    return () => {
      this.members.delete(entry)
    }
  }

  /** Open connections of one credential on this instance. */
  count(kind: CredentialKind, id: number): number {
    return this.open[kind].get(id)?.size ?? 0
  }

  start() {
    this.timer ??= setInterval(() => void this.check(), Math.max(MIN_CHECK_MS, Math.floor(this.intervalMs / 2)))
    this.timer.unref?.()
  }

  stop() {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
  }

  /** One pass: closes every connection whose credential is no longer valid. */
  async check() {
    if (this.checking) return
    this.checking = true
    try {
      for (const kind of ['api', 'session', 'worker'] as const) {
        const byId = this.open[kind]
        if (byId.size === 0) continue
        for (const id of await invalidCredentials(this.sql, kind, [...byId.keys()])) {
          const closers = byId.get(id)
          if (!closers) continue
          byId.delete(id)
          for (const close of closers) {
            this.closed++
            try {
              close()
            } catch (error) {
              this.log.warn('closing a revoked connection failed', { error: String(error) })
            }
          }
        }
      }
      await this.checkMembers()
    } catch (error) {
      // Database down: the connections stay until the next pass can tell.
      this.log.warn('credential check failed', { error: String(error) })
    } finally {
      this.checking = false
    }
  }

  private async checkMembers() {
    if (this.members.size === 0) return
    const pairs = new Map<string, { userId: number; workspaceId: number }>()
    for (const { userId, workspace } of this.members) {
      const workspaceId = workspace()
      if (workspaceId !== null) pairs.set(`${userId}:${workspaceId}`, { userId, workspaceId })
    }
    const gone = new Set((await missingMemberships(this.sql, [...pairs.values()])).map((r) => `${r.user_id}:${r.workspace_id}`))
    if (gone.size === 0) return
    for (const entry of [...this.members]) {
      const workspaceId = entry.workspace()
      if (workspaceId === null || !gone.has(`${entry.userId}:${workspaceId}`)) continue
      this.members.delete(entry)
      this.closed++
      try {
        entry.close()
      } catch (error) {
        this.log.warn('closing a former member’s stream failed', { error: String(error) })
      }
    }
  }
}

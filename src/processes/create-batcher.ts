// Group commit of single creates (POST /processes). Creates that arrive in the same event-loop turn, or while
// the batch before them is in flight, are committed together: one transaction inserts all their processes
// and first events in one statement, their idempotency keys in another and their audit rows in a third, where
// a create on its own paid a transaction of four statements. Each request still gets its own answer: its
// process, or the replay of its Idempotency-Key, or its own error (a key reused with another body). A batch
// that fails for another reason is not allowed to fail its neighbours: its creates are made again one by one,
// each in its own transaction, and only the one at fault fails.
import type { AuditRow } from '../auth/audit'
import { writeAuditRows } from '../auth/audit'
import type { Principal } from '../auth/authenticator'
import type { Sql } from '../db/client'
import type { ProcessHub } from './hub-rules'
import type { Process } from './model'
import { insertProcessesOf, type NewProcess } from './queries/create'
import { toProcess } from './queries/rows'
import { admit, NO_QUOTAS, type Quotas } from './quotas'
import { announceNew, type CreateResult, createProcess, keyReused, requestHashOf } from './service'

const UNIQUE_VIOLATION = '23505'
/** At most this many creates per transaction; more wait for the next. */
const MAX_BATCH = 500

export interface CreateRequest {
  principal: Principal
  workspaceId: number
  item: NewProcess
  idempotencyKey: string | null
  audit: AuditRow
}

interface Entry {
  input: CreateRequest
  /** `<user> <key>`, or null without a key. */
  key: string | null
  hash: string | null
  resolve: (result: CreateResult) => void
  reject: (error: unknown) => void
}

type Outcome = { process: Process; replayed: boolean; uniqueReplayed: boolean } | { error: unknown }

export class CreateBatcher {
  private pending: Entry[] = []
  private running = false
  private scheduled = false
  /** Transactions and creates, for the metrics and the tests. */
  batches = 0
  creates = 0

  constructor(
    private readonly sql: Sql,
    private readonly hub: ProcessHub,
    /** Per-workspace quotas, checked in each batch's transaction under the workspaces' locks (quotas.ts). */
    private readonly quotas: Quotas = NO_QUOTAS,
  ) {}

  submit(input: CreateRequest): Promise<CreateResult> {
    // A unique_key is answered by what holds it (src/processes/unique.ts), each on its own transaction.
    if (input.item.unique_key) return createProcess(this.sql, this.hub, { ...input, quotas: this.quotas })
    return new Promise((resolve, reject) => {
      const key = input.idempotencyKey === null ? null : `${input.principal.userId} ${input.idempotencyKey}`
      const hash = key === null ? null : requestHashOf(input.workspaceId, [input.item])
      this.pending.push({ input, key, hash, resolve, reject })
      this.kick()
    })
  }

  private kick() {
    if (this.running || this.scheduled) return
    this.scheduled = true
    // The rest of this turn's requests join the batch.
    setImmediate(() => {
      this.scheduled = false
      void this.drain()
    })
  }

  private async drain() {
    if (this.running) return
    this.running = true
    try {
      while (this.pending.length > 0) {
        // A key once per transaction: a second request with it waits for the next, and replays the first.
        const batch: Entry[] = []
        const keys = new Set<string>()
        const rest: Entry[] = []
        for (const entry of this.pending) {
          if (batch.length < MAX_BATCH && (entry.key === null || !keys.has(entry.key))) {
            if (entry.key !== null) keys.add(entry.key)
            batch.push(entry)
          } else rest.push(entry)
        }
        this.pending = rest
        await this.flush(batch)
      }
    } finally {
      this.running = false
    }
  }

  private async flush(batch: Entry[]) {
    this.batches++
    this.creates += batch.length
    let outcomes: Outcome[] | null = null
    for (let attempt = 0; attempt < 3 && outcomes === null; attempt++) {
      try {
        outcomes = await this.transaction(batch)
      } catch (error) {
        // A key committed meanwhile by another instance (or a create on its own): the next attempt replays it.
        if ((error as { code?: string }).code === UNIQUE_VIOLATION) continue
        break
      }
    }
    if (outcomes === null) {
      // One by one, each in its own transaction: only a create at fault fails.
      await Promise.all(batch.map((e) => createProcess(this.sql, this.hub, { ...e.input, quotas: this.quotas }).then(e.resolve, e.reject)))
      return
    }
    const created = outcomes.flatMap((o) => ('process' in o && !o.replayed ? [o.process] : []))
    this.hub.publishAll(created)
    announceNew(this.hub, created)
    for (const [i, entry] of batch.entries()) {
      const outcome = outcomes[i]!
      if ('error' in outcome) entry.reject(outcome.error)
      else entry.resolve(outcome)
    }
  }

  private transaction(batch: Entry[]): Promise<Outcome[]> {
    return this.sql.begin(async (tx) => {
      const outcomes: Array<Outcome | null> = batch.map(() => null)
      const keyed = batch.flatMap((e, i) => (e.key === null ? [] : [{ i, user: e.input.principal.userId, key: e.input.idempotencyKey! }]))
      if (keyed.length > 0) {
        const users = keyed.map((k) => k.user)
        const keys = keyed.map((k) => k.key)
        await tx`
          delete from idempotency_keys k
           using unnest(${users}::bigint[], ${keys}::text[]) as x(user_id, key)
           where k.user_id = x.user_id and k.key = x.key and k.created_at < now() - interval '24 hours'`
        const seen = await tx<{ user_id: number; key: string; response: any; request_hash: string | null; unique_replayed: boolean }[]>`
          select k.user_id, k.key, k.response, k.request_hash, k.unique_replayed
            from idempotency_keys k join unnest(${users}::bigint[], ${keys}::text[]) as x(user_id, key)
              on k.user_id = x.user_id and k.key = x.key`
        const byKey = new Map(seen.map((r) => [`${r.user_id} ${r.key}`, r]))
        for (const { i } of keyed) {
          const entry = batch[i]!
          const first = byKey.get(entry.key!)
          if (!first) continue
          // jsonb keeps its own key order: the replay is put back in the API's.
          outcomes[i] =
            first.request_hash !== null && first.request_hash !== entry.hash
              ? { error: keyReused() }
              : { process: toProcess(first.response), replayed: true, uniqueReplayed: first.unique_replayed }
        }
      }
      const unseen = batch.flatMap((_, i) => (outcomes[i] === null ? [i] : []))
      // Over a workspace's quota: that create alone is refused (429), the rest of the batch goes on.
      const verdicts = await admit(
        tx,
        this.quotas,
        unseen.map((i) => ({ workspaceId: batch[i]!.input.workspaceId, type: batch[i]!.input.item.type, metadata: batch[i]!.input.item.metadata })),
      )
      for (const [n, i] of unseen.entries()) if (verdicts[n]) outcomes[i] = { error: verdicts[n] }
      const fresh = unseen.filter((_, n) => verdicts[n] === null)
      const processes = await insertProcessesOf(
        tx,
        fresh.map((i) => ({ ...batch[i]!.input.item, workspace_id: batch[i]!.input.workspaceId, created_by: batch[i]!.input.principal.userId })),
      )
      for (const [n, i] of fresh.entries()) outcomes[i] = { process: processes[n]!, replayed: false, uniqueReplayed: false }
      const newKeys = fresh.filter((i) => batch[i]!.key !== null)
      if (newKeys.length > 0) {
        const rows = newKeys.map((i) => {
          const process = (outcomes[i] as { process: Process }).process
          return {
            user_id: batch[i]!.input.principal.userId,
            key: batch[i]!.input.idempotencyKey,
            process_id: process.id,
            response: process,
            request_hash: batch[i]!.hash,
          }
        })
        // A plain insert: a key another transaction committed since the read above fails the batch, whose next
        // attempt replays it (see flush).
        await tx`
          insert into idempotency_keys (user_id, key, process_id, response, request_hash)
          select user_id, key, process_id, response, request_hash
            from jsonb_to_recordset(${JSON.stringify(rows)}::text::jsonb)
              as x(user_id bigint, key text, process_id bigint, response jsonb, request_hash text)`
      }
      await writeAuditRows(
        tx,
        fresh.map((i) => ({ ...batch[i]!.input.audit, workspace_id: batch[i]!.input.workspaceId })),
      )
      return outcomes as Outcome[]
    })
  }
}

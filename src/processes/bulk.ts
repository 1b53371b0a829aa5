// Bulk actions by filter (POST /processes/bulk): cancel, retry or discard every process a filter matches, or
// count them first (dry_run). The same transitions as the single-process routes (queries/transitions.ts
// userTransition: state machine, version, event, guard by the caller's writable workspaces), in batches of
// BULK_BATCH, each its own transaction published after it commits, so no statement holds locks on more than
// a batch and none outlives DB_STATEMENT_TIMEOUT_MS. One audit row for the whole call.
import type { Principal } from '../auth/authenticator'
import { type AuditRow, writeAuditRows } from '../auth/audit'
import type { Sql } from '../db/client'
import { HttpError, invalidRequest } from '../errors'
import type { ProcessHub } from './hub-rules'
import type { BulkAction, BulkFilter, BulkResult, Process } from './model'
import { type BulkSelection, countSelection, lockBatch } from './queries/bulk'
import type { ListFilter } from './queries/reads'
import { EDGES, transitionProcesses, userTransition } from './queries/transitions'
import { announceNew, userAction, withDeadlockRetry } from './service'

/**
 * Rows per batch: one statement updates them and appends their events. 500 keeps a batch's locks and its
 * transaction short (tens of milliseconds) while 100,000 rows take 200 round trips, not 100,000.
 */
export const BULK_BATCH = 500

export interface BulkInput {
  principal: Principal
  workspaceId: number
  action: BulkAction
  filter: BulkFilter
  dryRun: boolean
  /** BULK_MAX: a filter matching more is refused (422) before anything changes. */
  max: number
  audit: AuditRow
}

/** The statuses each action leaves, as its single-process route allows them. */
const FROM = { cancel: EDGES.cancel.from, retry: EDGES.retry.from, discard: EDGES.discard.from } as const

/** The list's filter of a bulk body (statuses as a comma list or an array). */
export function listFilterOf(workspaceId: number, f: BulkFilter): Omit<ListFilter, 'before' | 'limit'> {
  const tags = f.tag === undefined ? undefined : [...new Set((Array.isArray(f.tag) ? f.tag : [f.tag]).flatMap((v) => v.split(',')))]
  const statuses = f.status === undefined ? undefined : Array.isArray(f.status) ? f.status : f.status.split(',')
  return { workspaceId, statuses, type: f.type, tags, parentId: f.parent_id, view: f.view, q: f.q }
}

export async function bulkAction(sql: Sql, hub: ProcessHub, input: BulkInput): Promise<BulkResult> {
  const selection: BulkSelection = { filter: listFilterOf(input.workspaceId, input.filter), action: input.action, from: FROM[input.action] }
  const bounds = await countSelection(sql, selection, input.max)
  if (bounds.matched > input.max) {
    throw invalidRequest(`The filter matches more than ${input.max} processes (BULK_MAX); narrow it (status, type, tag, view, q) and act in parts`, {
      limit: input.max,
    })
  }
  const base = { action: input.action, workspace_id: input.workspaceId, matched: bounds.matched }
  if (input.dryRun || bounds.matched === 0) {
    const result: BulkResult = input.dryRun ? { ...base, dry_run: true } : { ...base, changed: 0, dry_run: false }
    await writeAuditRows(sql, [auditOf(input, result)])
    return result
  }
  let changed = 0
  let before = Number.MAX_SAFE_INTEGER
  for (;;) {
    const batch = await withDeadlockRetry(() =>
      sql.begin(async (tx) => {
        const locked = await lockBatch(tx, selection, bounds, before, BULK_BATCH)
        const plain = locked.filter((r) => !r.one_by_one).map((r) => r.id)
        const done = await transitionProcesses(tx, plain, userTransition(tx, input.action, input.principal.writableWorkspaceIds))
        return { locked, done }
      }),
    )
    if (batch.locked.length === 0) break
    before = batch.locked[batch.locked.length - 1]!.id
    publish(hub, batch.done)
    changed += batch.done.length
    // Tree nodes and unique keys: the single-process path, one transaction each (its cascade, its refusals).
    for (const row of batch.locked) {
      if (!row.one_by_one) continue
      if (await oneAction(sql, hub, input, row.id)) changed++
    }
    if (batch.locked.length < BULK_BATCH) break
  }
  const result: BulkResult = { ...base, changed, dry_run: false }
  await writeAuditRows(sql, [auditOf(input, result)])
  return result
}

/** One process through the single-process route's own transaction; false when it was refused (it changed meanwhile). */
async function oneAction(sql: Sql, hub: ProcessHub, input: BulkInput, id: number): Promise<boolean> {
  try {
    await userAction(sql, hub, { principal: input.principal, id, action: input.action, audit: null })
    return true
  } catch (error) {
    if (error instanceof HttpError && error.status < 500) return false
    throw error
  }
}

/** After commit: every stream sees each change; the holder of a cancelled lease is told; retried work wakes claims. */
function publish(hub: ProcessHub, changed: Process[]) {
  if (changed.length === 0) return
  hub.publishAll(changed)
  const retried = changed.filter((p) => p.status === 'pending')
  announceNew(hub, retried)
}

function auditOf(input: BulkInput, result: BulkResult): AuditRow {
  return {
    ...input.audit,
    workspace_id: input.workspaceId,
    details: { action: input.action, filter: input.filter, matched: result.matched, changed: result.changed ?? null, dry_run: result.dry_run },
  }
}

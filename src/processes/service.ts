// Process mutations: each commits its change, its event and (for user requests) its audit row together,
// then publishes the committed state. Nothing is published before it is committed.
import type { Principal } from '../auth/authenticator'
import { type AuditRow, writeAuditRows } from '../auth/audit'
import type { Sql } from '../db/client'
import { forbidden, invalidRequest, invalidTransition, notFound } from '../errors'
import type { ProcessHub } from './hub-rules'
import type { Process } from './model'
import type { Status } from './states'
import { insertProcessRows, type NewProcess } from './queries/create'
import { findState, getProcesses } from './queries/reads'
import { toProcess } from './queries/rows'
import { runNow, transitionProcess, type Transition, userTransition } from './queries/transitions'
import { cancelDescendants, lockDescendants, resumeWaiting, retryDescendants } from './queries/trees'
import { isParentEnded, parentEnded, parentFor } from './tree'
import { admit, NO_QUOTAS, type Quotas } from './quotas'
import { insertUnique, UNIQUE_KEY_INDEX } from './unique'

const UNIQUE_VIOLATION = '23505'
const DEADLOCK_DETECTED = '40P01'

/**
 * A cascade locks a tree bottom-up, as children's transitions do, but children spawned while it
 * waited for the parent are locked after it: in that narrow window Postgres may pick it as a deadlock's victim.
 * Nothing of it committed, so it is run again.
 */
export async function withDeadlockRetry<T>(run: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await run()
    } catch (error) {
      if ((error as { code?: string }).code !== DEADLOCK_DETECTED || attempt >= 2) throw error
    }
  }
}

class ReplayRace extends Error {}

/** An Idempotency-Key is bound to the request it was first used with. */
export const requestHashOf = (workspaceId: number, items: NewProcess[]) =>
  new Bun.CryptoHasher('sha256').update(JSON.stringify([workspaceId, items])).digest('hex')

export const keyReused = () =>
  invalidRequest('Idempotency-Key was already used with a different request body', [{ path: '/', message: 'Idempotency-Key reused with a different body' }])

export interface CreateResult {
  process: Process
  replayed: boolean
  /** An existing process holds the item's unique_key: it is what was returned, and nothing was created. */
  uniqueReplayed: boolean
}

/** One create on its own transaction (the create batcher's fallback when its group statement fails). */
export async function createProcess(
  sql: Sql,
  hub: ProcessHub,
  input: { principal: Principal; workspaceId: number; item: NewProcess; idempotencyKey: string | null; audit: AuditRow; tree?: TreeInput; quotas?: Quotas },
): Promise<CreateResult> {
  const { processes, replayed, uniqueReplayed } = await createMany(sql, hub, { ...input, items: [input.item], keyPrefix: '', single: true })
  return { process: processes[0]!, replayed, uniqueReplayed: uniqueReplayed.length > 0 }
}

/** POST /processes/batch: all in one transaction with one audit row; its idempotency keys are its own. */
export async function createProcesses(
  sql: Sql,
  hub: ProcessHub,
  input: { principal: Principal; workspaceId: number; items: NewProcess[]; idempotencyKey: string | null; audit: AuditRow; tree?: TreeInput; quotas?: Quotas },
): Promise<{ processes: Process[]; replayed: boolean; uniqueReplayed: number[] }> {
  return createMany(sql, hub, { ...input, keyPrefix: 'batch:', single: false })
}

/** A create's tree: the parent its items go under, and (a single create) the children made with it. */
export interface TreeInput {
  parentId?: number
  children?: NewProcess[]
}

async function createMany(
  sql: Sql,
  hub: ProcessHub,
  input: {
    principal: Principal
    workspaceId: number
    items: NewProcess[]
    idempotencyKey: string | null
    audit: AuditRow
    keyPrefix: string
    single: boolean
    tree?: TreeInput
    quotas?: Quotas
  },
): Promise<{ processes: Process[]; replayed: boolean; uniqueReplayed: number[] }> {
  const { principal } = input
  const tree = input.tree
  const key = input.idempotencyKey === null ? null : input.keyPrefix + input.idempotencyKey
  // What the key was first used for: the same key with another request is a client bug, refused (422), not replayed.
  const requestHash = key ? requestHashOf(input.workspaceId, tree ? ([...input.items, tree] as NewProcess[]) : input.items) : null
  for (let attempt = 0; ; attempt++) {
    try {
      const result = await sql.begin(async (tx) => {
        if (key) {
          await tx`delete from idempotency_keys
                    where user_id = ${principal.userId} and key = ${key} and created_at < now() - interval '24 hours'`
          const [seen] = await tx<{ response: any; request_hash: string | null; unique_replayed: boolean }[]>`
            select response, request_hash, unique_replayed from idempotency_keys where user_id = ${principal.userId} and key = ${key}`
          if (seen) {
            if (seen.request_hash !== null && seen.request_hash !== requestHash) throw keyReused()
            // jsonb keeps its own key order: the replay is put back in the API's.
            const uniqueReplayed: number[] = input.single ? (seen.unique_replayed ? [0] : []) : (seen.response.unique_replayed ?? [])
            return { processes: (input.single ? [seen.response] : seen.response.processes).map(toProcess), replayed: true, uniqueReplayed, created: [] }
          }
        }
        const children = tree?.children && tree.children.length > 0 ? tree.children : null
        // A batch (or a tree) is one transaction: an item over a quota refuses it whole; children count too.
        const verdicts = await admit(
          tx,
          input.quotas ?? NO_QUOTAS,
          [...input.items, ...(children ?? [])].map((item) => ({ workspaceId: input.workspaceId, type: item.type, metadata: item.metadata })),
        )
        const refused = verdicts.find((v) => v !== null)
        if (refused) throw refused
        const parent = tree?.parentId ? await parentFor(tx, tree.parentId, input.workspaceId, children ? 2 : 1) : null
        const made = await insertUnique(tx, { workspaceId: input.workspaceId, createdBy: principal.userId, items: input.items, parent })
        const { processes } = made
        if (children && made.created.length === 1) {
          // The children in the same transaction; the parent is read again for the counts the trigger gave it.
          const root = made.created[0]!
          const rows = await insertProcessRows(tx, {
            workspaceId: input.workspaceId,
            createdBy: principal.userId,
            items: children,
            parent: { id: root.id, root_id: root.root_id, depth: parent ? parent.depth + 1 : 0 },
          })
          const [counted] = await getProcesses(tx, [root.id])
          processes[0] = counted!
          made.created = [counted!, ...rows.map(toProcess)]
        }
        const uniqueReplayed = made.replayed.flatMap((r, i) => (r ? [i] : []))
        if (key) {
          const response = input.single ? processes[0] : uniqueReplayed.length > 0 ? { processes, unique_replayed: uniqueReplayed } : { processes }
          const stored = await tx`
            insert into idempotency_keys (user_id, key, process_id, response, request_hash, unique_replayed)
            values (${principal.userId}, ${key}, ${processes[0]!.id}, ${JSON.stringify(response)}::text::jsonb, ${requestHash}, ${uniqueReplayed.length > 0})
            on conflict do nothing
            returning key`
          // A concurrent request with the same key committed first: roll ours back and replay theirs.
          if (stored.length === 0) throw new ReplayRace()
        }
        // Nothing created (every item's key held): the answer is 200, and so is its audit row.
        await writeAuditRows(tx, [made.created.length === 0 ? { ...input.audit, status: 200 } : input.audit])
        return { processes, replayed: false, uniqueReplayed, created: made.created }
      })
      if (result.created.length > 0) {
        hub.publishAll(result.created)
        announceNew(hub, result.created)
      }
      return { processes: result.processes, replayed: result.replayed, uniqueReplayed: result.uniqueReplayed }
    } catch (error) {
      const raced = error instanceof ReplayRace || (error as { code?: string }).code === UNIQUE_VIOLATION
      if (!raced || attempt >= 2) throw error
    }
  }
}

/** Wakes one waiting claim per new process, now or when it comes due: grouped by type and due time. */
export function announceNew(hub: ProcessHub, processes: readonly Process[]) {
  const groups = new Map<string, { type: string; atMs: number; count: number }>()
  for (const p of processes) {
    const atMs = Date.parse(p.run_at)
    const k = `${p.type} ${atMs}`
    const group = groups.get(k)
    if (group) group.count++
    else groups.set(k, { type: p.type, atMs, count: 1 })
  }
  // Many due times (a batch spread over time): one wake-up per type at the first, so a batch is not a thousand timers.
  if (groups.size > 50) {
    const byType = new Map<string, { type: string; atMs: number; count: number }>()
    for (const g of groups.values()) {
      const t = byType.get(g.type)
      if (!t) byType.set(g.type, { ...g })
      else {
        t.count += g.count
        t.atMs = Math.min(t.atMs, g.atMs)
      }
    }
    for (const g of byType.values()) hub.announceWork(g.type, g.count, g.atMs)
    return
  }
  for (const g of groups.values()) hub.announceWork(g.type, g.count, g.atMs)
}

type UserActionName = 'cancel' | 'retry' | 'approve' | 'discard'

/** Where a process is, in a user's words. */
const STATUS_WORDS: Record<Status, string> = {
  pending: 'is pending (waiting for a worker)',
  running: 'is running',
  waiting_review: 'is waiting for review',
  completed: 'is already completed',
  failed: 'has failed',
  cancelled: 'is already cancelled',
}

/** What each user action allows (src/processes/queries.ts userTransition has the same `from` lists). */
const ALLOWED_WORDS: Record<UserActionName, string> = {
  retry: 'only failed processes can be retried',
  cancel: 'only pending or running processes can be cancelled',
  approve: 'only processes waiting for review can be approved',
  discard: 'only processes waiting for review can be discarded',
}

/** The 409's message: what happened and what is allowed, e.g. "This process is already completed; only failed processes can be retried." */
function refusal(status: Status, transition: Transition, action?: UserActionName): string {
  const allowed = action
    ? ALLOWED_WORDS[action]
    : `it can become ${transition.to} only when it ${transition.from.map((from) => STATUS_WORDS[from].replace('already ', '')).join(' or ')}`
  return `This process ${STATUS_WORDS[status]}; ${allowed}.`
}

/** Applies one transition (in `sql`, which may be a transaction); explains a miss as 404, 403 or 409. */
export async function applyTransition(
  sql: Sql,
  id: number,
  transition: Transition,
  visibleIn: number[] | null,
  writableIn: number[] | null = null,
  action?: UserActionName,
): Promise<Process> {
  const process = await transitionProcess(sql, id, transition)
  if (process) return process
  const state = await findState(sql, id)
  if (!state || (visibleIn && !visibleIn.includes(state.workspace_id))) throw notFound('Process not found')
  if (writableIn && !writableIn.includes(state.workspace_id)) throw forbidden('Your role in this workspace is read-only')
  throw invalidTransition(refusal(state.status, transition, action), {
    status: state.status,
    to: transition.to,
  })
}

export async function userAction(
  sql: Sql,
  hub: ProcessHub,
  input: { principal: Principal; id: number; action: UserActionName; note?: string; audit: AuditRow | null },
): Promise<Process> {
  const { principal, id } = input
  const { process, cascaded } = await withDeadlockRetry(() =>
    sql.begin(async (tx) => {
      // Guarded by the workspaces the caller may change (a viewer's are not): visible but read-only is 403.
      const transition = userTransition(tx, input.action, principal.writableWorkspaceIds, input.note)
      // A cancel or a retry reaches the descendants: locked first, from the bottom up (trees.ts).
      const cascades = input.action === 'cancel' || input.action === 'retry'
      const descendants = cascades ? await lockDescendants(tx, id) : []
      const changed = await applyTransition(tx, id, transition, principal.workspaceIds, principal.writableWorkspaceIds, input.action)
      let cascaded: Process[] = []
      // Children made while the cancel waited for the parent's row (a spawn that committed first) are cancelled
      // too: the parent is locked now, so the list is complete.
      if (input.action === 'cancel' && (descendants.length > 0 || changed.children !== null))
        cascaded = await cancelDescendants(tx, await lockDescendants(tx, id))
      if (input.action === 'retry') {
        const retried = await retryDescendants(tx, descendants)
        const resumed = await resumeWaiting(tx, [changed.id, ...retried.map((p) => p.id)])
        const byId = new Map([...retried, ...resumed].map((p) => [p.id, p]))
        cascaded = [...byId.values()].filter((p) => p.id !== changed.id)
        const root = resumed.find((p) => p.id === changed.id)
        if (input.audit) await writeAuditRows(tx, [{ ...input.audit, workspace_id: changed.workspace_id }])
        return { process: root ?? changed, cascaded }
      }
      if (input.audit) await writeAuditRows(tx, [{ ...input.audit, workspace_id: changed.workspace_id }])
      return { process: changed, cascaded }
    }),
  ).catch((error) => {
    if (isParentEnded(error)) throw parentEnded()
    // A retry back to pending while another process holds its unique_key (src/processes/unique.ts).
    const e = error as { code?: string; constraint_name?: string; constraint?: string; message?: string }
    if (e.code === UNIQUE_VIOLATION && (e.constraint_name ?? e.constraint ?? e.message ?? '').includes(UNIQUE_KEY_INDEX)) {
      throw invalidTransition('Another process with this unique_key is pending or running; retry it once that one has finished.', {
        reason: 'unique_key',
      })
    }
    throw error
  })
  hub.publishAll([process, ...cascaded])
  for (const p of [process, ...cascaded]) if (p.status === 'pending') hub.announceWork(p.type)
  return process
}

/** POST /processes/{id}/run-now: due at once, with its audit row; explained as 404, 403 or 409 when refused. */
export async function runNowAction(sql: Sql, hub: ProcessHub, input: { principal: Principal; id: number; audit: AuditRow }): Promise<Process> {
  const { principal, id } = input
  const process = await sql.begin(async (tx) => {
    const changed = await runNow(tx, id, principal.writableWorkspaceIds)
    if (!changed) {
      const state = await findState(tx, id)
      if (!state || !principal.workspaceIds.includes(state.workspace_id)) throw notFound('Process not found')
      if (!principal.writableWorkspaceIds.includes(state.workspace_id)) throw forbidden('Your role in this workspace is read-only')
      const why = state.status === 'pending' ? 'is already due' : STATUS_WORDS[state.status]
      throw invalidTransition(`This process ${why}; only a pending process due later can be run now.`, { status: state.status })
    }
    await writeAuditRows(tx, [{ ...input.audit, workspace_id: changed.workspace_id }])
    return changed
  })
  hub.publishAll([process])
  hub.announceWork(process.type)
  return process
}

// Process mutations: each commits its change, its event and (for user requests) its audit row together,
// then publishes the committed state. Nothing is published before it is committed.
import type { Principal } from '../auth/authenticator'
import { type AuditRow, writeAuditRows } from '../auth/audit'
import type { Sql } from '../db/client'
import { invalidTransition, notFound } from '../errors'
import type { Hub } from '../hub/hub'
import type { Process } from './model'
import type { Status } from './states'
import { findState, insertProcess, transitionProcess, type Transition, userTransition } from './queries'

const UNIQUE_VIOLATION = '23505'

class ReplayRace extends Error {}

export interface CreateResult {
  process: Process
  replayed: boolean
}

export async function createProcess(
  sql: Sql,
  hub: Hub,
  input: { principal: Principal; workspaceId: number; type: string; metadata: object; idempotencyKey: string | null; audit: AuditRow },
): Promise<CreateResult> {
  const { principal, idempotencyKey: key } = input
  for (let attempt = 0; ; attempt++) {
    try {
      const result = await sql.begin(async (tx): Promise<CreateResult> => {
        if (key) {
          await tx`delete from idempotency_keys
                    where user_id = ${principal.userId} and key = ${key} and created_at < now() - interval '24 hours'`
          const [seen] = await tx<{ response: Process }[]>`
            select response from idempotency_keys where user_id = ${principal.userId} and key = ${key}`
          if (seen) return { process: seen.response, replayed: true }
        }
        const process = await insertProcess(tx, {
          workspaceId: input.workspaceId,
          type: input.type,
          metadata: input.metadata,
          createdBy: principal.userId,
        })
        if (key) {
          const stored = await tx`
            insert into idempotency_keys (user_id, key, process_id, response)
            values (${principal.userId}, ${key}, ${process.id}, ${JSON.stringify(process)}::text::jsonb)
            on conflict do nothing
            returning key`
          // A concurrent request with the same key committed first: roll ours back and replay theirs.
          if (stored.length === 0) throw new ReplayRace()
        }
        await writeAuditRows(tx, [input.audit])
        return { process, replayed: false }
      })
      if (!result.replayed) {
        hub.publish(result.process)
        hub.announceWork(result.process.type)
      }
      return result
    } catch (error) {
      const raced = error instanceof ReplayRace || (error as { code?: string }).code === UNIQUE_VIOLATION
      if (!raced || attempt >= 2) throw error
    }
  }
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
  const allowed = action ? ALLOWED_WORDS[action] : `it can become ${transition.to} only when it ${transition.from.map((from) => STATUS_WORDS[from].replace('already ', '')).join(' or ')}`
  return `This process ${STATUS_WORDS[status]}; ${allowed}.`
}

/** Applies one transition (in `sql`, which may be a transaction); explains a miss as 404 or 409. */
export async function applyTransition(sql: Sql, id: number, transition: Transition, visibleIn: number[] | null, action?: UserActionName): Promise<Process> {
  const process = await transitionProcess(sql, id, transition)
  if (process) return process
  const state = await findState(sql, id)
  if (!state || (visibleIn && !visibleIn.includes(state.workspace_id))) throw notFound('Process not found')
  throw invalidTransition(refusal(state.status, transition, action), {
    status: state.status,
    to: transition.to,
  })
}

export async function userAction(
  sql: Sql,
  hub: Hub,
  input: { principal: Principal; id: number; action: UserActionName; note?: string; audit: AuditRow },
): Promise<Process> {
  const { principal, id } = input
  const process = await sql.begin(async (tx) => {
    const transition = userTransition(tx, input.action, principal.workspaceIds, input.note)
    const changed = await applyTransition(tx, id, transition, principal.workspaceIds, input.action)
    await writeAuditRows(tx, [{ ...input.audit, workspace_id: changed.workspace_id }])
    return changed
  })
  hub.publish(process)
  if (process.status === 'pending') hub.announceWork(process.type)
  return process
}

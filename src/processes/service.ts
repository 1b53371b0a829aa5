// Process mutations: each commits its change, its event and (for user requests) its audit row together,
// then publishes the committed state. Nothing is published before it is committed.
import type { Principal } from '../auth/authenticator'
import { type AuditRow, writeAuditRows } from '../auth/audit'
import type { Sql } from '../db/client'
import { forbidden, invalidRequest, invalidTransition, notFound } from '../errors'
import type { Hub } from '../hub/hub'
import type { Process } from './model'
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
  // What the key was first used for: the same key with another request is a client bug, refused (422), not replayed.
  const requestHash = key ? new Bun.CryptoHasher('sha256').update(JSON.stringify([input.workspaceId, input.type, input.metadata])).digest('hex') : null
  for (let attempt = 0; ; attempt++) {
    try {
      const result = await sql.begin(async (tx): Promise<CreateResult> => {
        if (key) {
          await tx`delete from idempotency_keys
                    where user_id = ${principal.userId} and key = ${key} and created_at < now() - interval '24 hours'`
          const [seen] = await tx<{ response: Process; request_hash: string | null }[]>`
            select response, request_hash from idempotency_keys where user_id = ${principal.userId} and key = ${key}`
          if (seen) {
            if (seen.request_hash !== null && seen.request_hash !== requestHash) {
              throw invalidRequest('Idempotency-Key was already used with a different request body', [{ path: '/', message: 'Idempotency-Key reused with a different body' }])
            }
            return { process: seen.response, replayed: true }
          }
        }
        const process = await insertProcess(tx, {
          workspaceId: input.workspaceId,
          type: input.type,
          metadata: input.metadata,
          createdBy: principal.userId,
        })
        if (key) {
          const stored = await tx`
            insert into idempotency_keys (user_id, key, process_id, response, request_hash)
            values (${principal.userId}, ${key}, ${process.id}, ${JSON.stringify(process)}::text::jsonb, ${requestHash})
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

/** Applies one transition (in `sql`, which may be a transaction); explains a miss as 404 or 409. */
export async function applyTransition(sql: Sql, id: number, transition: Transition, visibleIn: number[] | null, writableIn: number[] | null = null): Promise<Process> {
  const process = await transitionProcess(sql, id, transition)
  if (process) return process
  const state = await findState(sql, id)
  if (!state || (visibleIn && !visibleIn.includes(state.workspace_id))) throw notFound('Process not found')
  if (writableIn && !writableIn.includes(state.workspace_id)) throw forbidden('Your role in this workspace is read-only')
  throw invalidTransition(`Cannot move a ${state.status} process to ${transition.to}`, {
    status: state.status,
    to: transition.to,
  })
}

export async function userAction(
  sql: Sql,
  hub: Hub,
  input: { principal: Principal; id: number; action: 'cancel' | 'retry' | 'approve' | 'discard'; note?: string; audit: AuditRow },
): Promise<Process> {
  const { principal, id } = input
  const process = await sql.begin(async (tx) => {
    // Guarded by the workspaces the caller may change (a viewer's are not): visible but read-only is 403.
    const transition = userTransition(tx, input.action, principal.writableWorkspaceIds, input.note)
    const changed = await applyTransition(tx, id, transition, principal.workspaceIds, principal.writableWorkspaceIds)
    await writeAuditRows(tx, [{ ...input.audit, workspace_id: changed.workspace_id }])
    return changed
  })
  hub.publish(process)
  if (process.status === 'pending') hub.announceWork(process.type)
  return process
}

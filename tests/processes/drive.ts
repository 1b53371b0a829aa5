// Drives a process into any status through the real operations: POST /processes, claimNext and the worker
// transitions from queries.ts, and the REST cancel and review routes. Each process gets a type of its own,
// so a claim here never takes another test's work.
import { expect } from 'bun:test'
import type { Sql } from '../../src/db/client'
import type { Process } from '../../src/processes/model'
import { claimNext } from '../../src/processes/queries/claims'
import { transitionProcess, workerTransition } from '../../src/processes/queries/transitions'
import type { Status } from '../../src/processes/states'
import type { Requester } from '../support/helpers'

let counter = 0
export const uniqueType = (prefix = 'job') => `${prefix}_${Date.now().toString(36)}_${counter++}`

export const WORKER_ID = 'test-worker'

export async function createPending(request: Requester, token: string, type = uniqueType()): Promise<Process> {
  const created = await request('POST', '/processes', { token, body: { type, metadata: { source: 'test' } } })
  expect(created.status).toBe(201)
  return created.body
}

export async function processIn(sql: Sql, request: Requester, token: string, status: Status): Promise<Process> {
  const pending = await createPending(request, token)
  if (status === 'pending') return pending
  if (status === 'cancelled') return (await request('POST', `/processes/${pending.id}/cancel`, { token })).body
  const running = (await claimNext(sql, { workerId: WORKER_ID, types: [pending.type], max: 1 }))[0] ?? null
  expect(running?.id).toBe(pending.id)
  if (status === 'running') return running!
  const op = status === 'completed' ? 'complete' : status === 'waiting_review' ? 'review' : 'fail'
  const done = await transitionProcess(
    sql,
    running!.id,
    workerTransition(sql, op, WORKER_ID, running!.attempts, { error: 'boom', result_summary: { rows: 3 } }),
  )
  expect(done?.status).toBe(status)
  return done!
}

export async function eventsOf(sql: Sql, id: number) {
  return sql<{ id: number; status: Status; message: string | null }[]>`
    select id, status, message from process_events where process_id = ${id} order by id`
}

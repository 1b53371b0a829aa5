// Changing processes: create (one, or a batch), retry, cancel, review. Each commits its change, its event and
// its audit row together (src/processes/service.ts).
import { Elysia, t } from 'elysia'
import { auditRowFor, activeWorkspace, authPlugin, requireWriter } from '../../auth/plugin'
import { invalidRequest } from '../../errors'
import type { RequestState } from '../../auth/request-state'
import type { Services } from '../../wiring'
import {
  BatchBody,
  type BatchItem,
  CreateBody,
  checkMetadataBytes,
  ErrorSchema,
  IdempotencyHeaders,
  IdParams,
  MAX_METADATA_DEPTH,
  MAX_METADATA_VALUES,
  Process,
  ReviewBody,
  unstorableJson,
} from '../model'
import type { NewProcess } from '../queries/create'
import { quotasOf } from '../quotas'
import { createProcess, createProcesses, userAction } from '../service'
import { JSON_BODY, noBody } from './body'
import { bodyErrors, errors, responses } from './docs'

export function processWrites(s: Services) {
  return new Elysia({ prefix: '/processes' })
    .use(authPlugin(s))
    .post(
      '',
      async ({ body, headers, principal, state, request, set }) => {
        const item = newProcess(s, body, '')
        const workspaceId = activeWorkspace(principal, state, body.workspace_id)
        requireWriter(principal, workspaceId)
        const input = {
          principal,
          workspaceId,
          item,
          idempotencyKey: headers['idempotency-key'] ?? null,
          audit: auditRowFor(request, state, 201),
        }
        // A tree is made in its own transaction, parent and children together; a plain create is
        // group-committed with the others.
        const tree =
          body.parent_id !== undefined || (body.children && body.children.length > 0)
            ? { parentId: body.parent_id, children: body.children?.map((child, i) => newProcess(s, child, `/children/${i}`)) }
            : null
        const { process, replayed, uniqueReplayed } = tree
          ? await createProcess(s.sql, s.hub, { ...input, tree, quotas: quotasOf(s.config) })
          : await s.creates.submit(input)
        state.audited = !replayed
        set.status = uniqueReplayed ? 200 : 201
        set.headers.location = `/processes/${process.id}`
        if (replayed) set.headers['idempotent-replayed'] = 'true'
        if (uniqueReplayed) set.headers['unique-replayed'] = 'true'
        return process
      },
      {
        parse: JSON_BODY,
        body: CreateBody,
        headers: IdempotencyHeaders,
        detail: {
          summary:
            'Create a process in pending (extension); priority, run_at or delay_ms, max_attempts; Idempotency-Key honoured for 24 h; unique_key: 200 with the pending or running process holding it',
          tags: ['processes'],
          responses: responses({ 200: Process, 201: Process, ...errors, ...bodyErrors }),
        },
      },
    )
    .post(
      '/batch',
      async ({ body, headers, principal, state, request, set }) => {
        const items = body.processes.map((item, i) => newProcess(s, item, `/processes/${i}`))
        const workspaceId = activeWorkspace(principal, state, body.workspace_id)
        requireWriter(principal, workspaceId)
        const { processes, replayed, uniqueReplayed } = await createProcesses(s.sql, s.hub, {
          principal,
          workspaceId,
          items,
          ...(body.parent_id !== undefined ? { tree: { parentId: body.parent_id } } : {}),
          idempotencyKey: headers['idempotency-key'] ?? null,
          audit: auditRowFor(request, state, 201),
          quotas: quotasOf(s.config),
        })
        state.audited = !replayed
        set.status = uniqueReplayed.length === processes.length ? 200 : 201
        if (replayed) set.headers['idempotent-replayed'] = 'true'
        if (uniqueReplayed.length > 0) {
          set.headers['unique-replayed'] = 'true'
          return { processes, unique_replayed: uniqueReplayed }
        }
        return { processes }
      },
      {
        parse: JSON_BODY,
        body: BatchBody,
        headers: IdempotencyHeaders,
        detail: {
          summary: 'Create 1–1000 processes in one transaction, one audit row (extension); Idempotency-Key honoured for 24 h',
          tags: ['processes'],
          responses: responses({ 200: BatchResponse, 201: BatchResponse, ...errors, ...bodyErrors }),
        },
      },
    )
    .post('/:id/retry', ({ params: { id }, principal, state, request }) => action(s, { id, principal, state, request, action: 'retry' }), {
      parse: noBody,
      params: IdParams,
      detail: { summary: 'failed → pending', tags: ['processes'], responses: responses({ 200: Process, 409: ErrorSchema, ...errors, 413: ErrorSchema }) },
    })
    .post('/:id/cancel', ({ params: { id }, principal, state, request }) => action(s, { id, principal, state, request, action: 'cancel' }), {
      parse: noBody,
      params: IdParams,
      detail: {
        summary: 'pending | running → cancelled; the worker is told at once',
        tags: ['processes'],
        responses: responses({ 200: Process, 409: ErrorSchema, ...errors, 413: ErrorSchema }),
      },
    })
    .post(
      '/:id/review',
      ({ params: { id }, body, principal, state, request }) =>
        action(s, { id, principal, state, request, action: body.decision === 'approve' ? 'approve' : 'discard', note: body.message }),
      {
        parse: JSON_BODY,
        params: IdParams,
        body: ReviewBody,
        detail: {
          summary: 'waiting_review → completed (approve) | cancelled (discard) (extension)',
          tags: ['processes'],
          responses: responses({ 200: Process, 409: ErrorSchema, ...errors, ...bodyErrors }),
        },
      },
    )
}

/** A create body's item with its defaults resolved; 422 for what the schema cannot say. */
function newProcess(s: Services, body: BatchItem, at: string): NewProcess {
  checkMetadataBytes(body.metadata, at, s.config.METADATA_MAX_BYTES)
  const unstorable = unstorableJson(body.metadata, MAX_METADATA_DEPTH, MAX_METADATA_VALUES)
  if (unstorable) throw invalidRequest(`Invalid body ${at}/metadata: ${unstorable}`, [{ path: `${at}/metadata`, message: unstorable }])
  if (body.run_at !== undefined && body.delay_ms !== undefined) throw invalidRequest(`Invalid body ${at}: give run_at or delay_ms, not both`)
  let runAt: string | null = null
  if (body.run_at !== undefined) {
    const ms = Date.parse(body.run_at)
    // Postgres's timestamptz reaches far, but a date past 9999 is a typo, not a schedule.
    if (!Number.isFinite(ms) || ms < 0 || ms > Date.UTC(9999, 11, 31)) throw invalidRequest(`Invalid body ${at}/run_at: expected an ISO-8601 timestamp`)
    runAt = new Date(ms).toISOString()
  }
  return {
    type: body.type,
    metadata: body.metadata ?? {},
    tags: [...new Set(body.tags ?? [])],
    priority: body.priority ?? 0,
    max_attempts: s.queue.maxAttemptsFor(body.type, body.max_attempts),
    run_at: runAt,
    delay_ms: body.delay_ms ?? null,
    unique_key: body.unique_key ?? null,
    ...(body.weight !== undefined ? { weight: body.weight } : {}),
    ...(body.child_failures !== undefined ? { child_failures: body.child_failures } : {}),
    ...(body.finalize !== undefined ? { finalize: body.finalize } : {}),
  }
}

const BatchResponse = t.Object({
  processes: t.Array(Process),
  unique_replayed: t.Optional(t.Array(t.Integer(), { description: 'indexes of the items answered with an existing process holding their unique_key' })),
})

async function action(
  s: Services,
  o: {
    id: number
    principal: Parameters<typeof userAction>[2]['principal']
    state: RequestState
    request: Request
    action: 'cancel' | 'retry' | 'approve' | 'discard'
    note?: string
  },
) {
  const process = await userAction(s.sql, s.hub, {
    principal: o.principal,
    id: o.id,
    action: o.action,
    note: o.note,
    audit: auditRowFor(o.request, o.state, 200),
  })
  o.state.audited = true
  o.state.workspaceId = process.workspace_id
  return process
}

// The console's actions (README: API): bulk cancel / retry / discard by filter with a count preview, and
// run-now for a process due later. Role-checked as the single-process routes are.
import { Elysia } from 'elysia'
import type { Principal } from '../../auth/authenticator'
import { activeWorkspace, auditRowFor, authPlugin, requireWriter } from '../../auth/plugin'
import { forbidden } from '../../errors'
import type { Services } from '../../wiring'
import { bulkAction } from '../bulk'
import { BulkBody, BulkResult, ErrorSchema, IdParams, Process } from '../model'
import { runNowAction } from '../service'
import { JSON_BODY, noBody } from './body'
import { bodyErrors, errors, responses } from './docs'

/** A public token reads only; its routes never reach here, and this says so again. */
const refusePublic = (principal: Principal) => {
  if (principal.scope) throw forbidden('A public token may only read the processes it covers')
}

export function processActions(s: Services) {
  return new Elysia({ prefix: '/processes' })
    .use(authPlugin(s))
    .post(
      '/bulk',
      async ({ body, principal, state, request }) => {
        refusePublic(principal)
        const workspaceId = activeWorkspace(principal, state, body.filter.workspace_id)
        requireWriter(principal, workspaceId)
        const result = await bulkAction(s.sql, s.hub, {
          principal,
          workspaceId,
          action: body.action,
          filter: body.filter,
          dryRun: body.dry_run === true,
          max: s.config.BULK_MAX,
          audit: auditRowFor(request, state, 200),
        })
        state.audited = true
        return result
      },
      {
        parse: JSON_BODY,
        body: BulkBody,
        detail: {
          summary:
            'Cancel, retry or discard every process a filter matches (extension): `dry_run` counts them; in batches, one audit row; past BULK_MAX matched, 422',
          tags: ['processes'],
          responses: responses({ 200: BulkResult, ...errors, ...bodyErrors }),
        },
      },
    )
    .post(
      '/:id/run-now',
      async ({ params: { id }, principal, state, request }) => {
        refusePublic(principal)
        const process = await runNowAction(s.sql, s.hub, { principal, id, audit: auditRowFor(request, state, 200) })
        state.audited = true
        state.workspaceId = process.workspace_id
        return process
      },
      {
        parse: noBody,
        params: IdParams,
        detail: {
          summary: 'A pending process due later (delay, retry backoff) becomes due now (extension); 409 otherwise',
          tags: ['processes'],
          responses: responses({ 200: Process, 409: ErrorSchema, ...errors, 413: ErrorSchema }),
        },
      },
    )
}

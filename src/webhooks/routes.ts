// The webhook routes (README: Webhooks): per workspace, admin or owner only (a webhook sends the workspace's
// processes to another host). The secret is shown once, in the create's answer. Changes are audited in their
// own transaction.
import { isIP } from 'node:net'
import { Elysia, t } from 'elysia'
import { writeAuditRows } from '../auth/audit'
import { activeWorkspace, auditRowFor, authPlugin, requireAdmin } from '../auth/plugin'
import type { Principal } from '../auth/authenticator'
import type { Sql } from '../db/client'
import { invalidRequest, invalidTransition, notFound } from '../errors'
import { documented } from '../ops/docs'
import { JSON_BODY, noBody } from '../processes/routes/body'
import { ErrorSchema, IdParams } from '../processes/model'
import type { RequestState } from '../auth/request-state'
import type { Services } from '../wiring'
import type { DeliveryLoop } from './loop'
import { CreatedWebhook, CreateWebhookBody, Delivery, PatchWebhookBody, Webhook } from './model'
import { deleteWebhook, getWebhook, insertWebhook, listDeliveries, listWebhooks, redeliver, updateWebhook } from './queries'
import { newSecret } from './signing'
import { isBlockedAddress } from './ssrf'

/**
 * A webhook URL as a 422 explains it: http or https, no user:password (verify the signature instead), and —
 * unless WEBHOOK_ALLOW_PRIVATE — not a literal private, loopback or link-local address (a name is checked at
 * each attempt, after it is resolved).
 */
export function checkWebhookUrl(raw: string, allowPrivate: boolean): string {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw invalidRequest('Invalid body /url: not a URL', [{ path: '/url', message: 'not a URL' }])
  }
  const refuse = (message: string) => invalidRequest(`Invalid body /url: ${message}`, [{ path: '/url', message }])
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw refuse(`expected an http or https URL (got ${url.protocol.replace(/:$/, '')})`)
  if (url.username || url.password) throw refuse('credentials in the URL are not sent; verify the Webhook-Signature instead')
  const host = url.hostname.replace(/^\[|\]$/g, '')
  if (!allowPrivate && isIP(host) && isBlockedAddress(host))
    throw refuse(`${host} is a private, loopback, link-local or reserved address (WEBHOOK_ALLOW_PRIVATE is off)`)
  return url.toString()
}

const errors = {
  401: ['unauthenticated', ErrorSchema],
  403: ['forbidden', ErrorSchema],
  404: ['not_found', ErrorSchema],
  422: ['invalid_request', ErrorSchema],
  500: ['internal', ErrorSchema],
  503: ['unavailable', ErrorSchema],
} as const satisfies Record<number, [string, typeof ErrorSchema]>
const bodyErrors = { 400: ['bad_request', ErrorSchema], 413: ['payload_too_large', ErrorSchema] } as const satisfies Record<
  number,
  [string, typeof ErrorSchema]
>

const WorkspaceQuery = t.Object({ workspace_id: t.Optional(t.String({ pattern: '^[1-9][0-9]{0,15}$' })) }, { additionalProperties: true })
const DeliveriesQuery = t.Object(
  {
    limit: t.Optional(t.String({ pattern: '^([1-9][0-9]?|1[0-9][0-9]|200)$', description: '1–200, default 50' })),
    before: t.Optional(t.String({ pattern: '^[1-9][0-9]{0,15}$', description: 'a delivery id: the older ones (the next page)' })),
  },
  { additionalProperties: true },
)
const DeliveryParams = t.Object({ id: IdParams.properties.id, delivery_id: IdParams.properties.id })

export function webhooks(s: Services, loop?: Pick<DeliveryLoop, 'wake'>) {
  const allowPrivate = s.config.WEBHOOK_ALLOW_PRIVATE === 'on'
  const audited = async <T>(request: Request, state: RequestState, status: number, work: (tx: Sql) => Promise<T>): Promise<T> => {
    const result = await s.sql.begin(async (tx) => {
      const value = await work(tx)
      await writeAuditRows(tx, [auditRowFor(request, state, status)])
      return value
    })
    state.audited = true
    return result
  }
  /** A webhook of the caller's workspaces (404 otherwise), which the caller administers (403 otherwise). */
  const owned = async (sql: Sql, id: number, principal: Principal, state: RequestState, lock = false) => {
    const webhook = await getWebhook(sql, id, principal.workspaceIds, lock)
    if (!webhook) throw notFound('Webhook not found')
    state.workspaceId = webhook.workspace_id
    requireAdmin(principal, webhook.workspace_id)
    return webhook
  }

  return new Elysia({ prefix: '/webhooks' })
    .use(authPlugin(s))
    .get(
      '',
      async ({ query, principal, state }) => {
        const workspaceId = activeWorkspace(principal, state, query.workspace_id === undefined ? undefined : Number(query.workspace_id))
        requireAdmin(principal, workspaceId)
        return listWebhooks(s.sql, workspaceId)
      },
      {
        query: WorkspaceQuery,
        detail: {
          summary: "The active workspace's webhooks (extension; admin)",
          tags: ['webhooks'],
          responses: documented({ 200: ['OK', t.Array(Webhook)], ...errors }),
        },
      },
    )
    .post(
      '',
      async ({ body, principal, state, request, set }) => {
        const workspaceId = activeWorkspace(principal, state, body.workspace_id)
        requireAdmin(principal, workspaceId)
        const url = checkWebhookUrl(body.url, allowPrivate)
        const secret = newSecret()
        const row = await audited(request, state, 201, (tx) =>
          insertWebhook(tx, {
            workspace_id: workspaceId,
            url,
            events: body.events,
            types: body.types ?? null,
            tags: body.tags ?? null,
            enabled: body.enabled ?? true,
            secret,
            created_by: principal.userId,
          }),
        )
        set.status = 201
        set.headers.location = `/webhooks/${row.id}`
        return row
      },
      {
        parse: JSON_BODY,
        body: CreateWebhookBody,
        detail: {
          summary: 'Create a webhook: signed POSTs of the events it names (extension; admin). The secret is shown once, here.',
          tags: ['webhooks'],
          responses: documented({ 201: ['Created', CreatedWebhook], ...errors, ...bodyErrors }),
        },
      },
    )
    .get('/:id', ({ params: { id }, principal, state }) => owned(s.sql, id, principal, state), {
      params: IdParams,
      detail: { summary: 'One webhook (extension; admin)', tags: ['webhooks'], responses: documented({ 200: ['OK', Webhook], ...errors }) },
    })
    .patch(
      '/:id',
      async ({ params: { id }, body, principal, state, request }) =>
        audited(request, state, 200, async (tx) => {
          await owned(tx, id, principal, state, true)
          return updateWebhook(tx, id, { ...body, url: body.url === undefined ? undefined : checkWebhookUrl(body.url, allowPrivate) })
        }),
      {
        parse: JSON_BODY,
        params: IdParams,
        body: PatchWebhookBody,
        detail: {
          summary: 'Change a webhook (extension; admin)',
          tags: ['webhooks'],
          responses: documented({ 200: ['OK', Webhook], ...errors, ...bodyErrors }),
        },
      },
    )
    .delete(
      '/:id',
      async ({ params: { id }, principal, state, request, set }) => {
        await audited(request, state, 204, async (tx) => {
          await owned(tx, id, principal, state, true)
          await deleteWebhook(tx, id)
        })
        set.status = 204
        return null
      },
      {
        params: IdParams,
        detail: {
          summary: 'Delete a webhook and its delivery log (extension; admin)',
          tags: ['webhooks'],
          responses: documented({ 204: ['Deleted', null], ...errors }),
        },
      },
    )
    .get(
      '/:id/deliveries',
      async ({ params: { id }, query, principal, state }) => {
        await owned(s.sql, id, principal, state)
        return listDeliveries(s.sql, id, query.limit === undefined ? 50 : Number(query.limit), query.before === undefined ? undefined : Number(query.before))
      },
      {
        params: IdParams,
        query: DeliveriesQuery,
        detail: {
          summary: "A webhook's delivery log, newest first: state, attempts, each attempt's response code and latency (extension; admin)",
          tags: ['webhooks'],
          responses: documented({ 200: ['OK', t.Array(Delivery)], ...errors }),
        },
      },
    )
    .post(
      '/:id/deliveries/:delivery_id/redeliver',
      async ({ params: { id, delivery_id }, principal, state, request }) => {
        const delivery = await audited(request, state, 200, async (tx) => {
          await owned(tx, id, principal, state)
          const result = await redeliver(tx, id, delivery_id)
          if (result === null) throw notFound('Delivery not found')
          if (result === 'sending') throw invalidTransition('This delivery is being sent right now; look at its log again in a moment.', { state: 'sending' })
          return result
        })
        loop?.wake()
        return delivery
      },
      {
        parse: noBody,
        params: DeliveryParams,
        detail: {
          summary: 'Send a delivery again, now, with a new retry window and the same Webhook-Id (extension; admin)',
          tags: ['webhooks'],
          responses: documented({ 200: ['OK', Delivery], 409: ['invalid_transition', ErrorSchema], ...errors }),
        },
      },
    )
}

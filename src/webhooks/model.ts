// TypeBox schemas for the webhook routes (README: Webhooks).
import { Type } from '@sinclair/typebox'
import { t } from 'elysia'
import { Id, TypePattern } from '../processes/model'

const Int = Type.Integer
const Timestamp = t.String({ format: 'date-time' })
const NullableTimestamp = t.Union([Timestamp, t.Null()])

/** What a webhook may ask for: a process created, and each status it can enter. */
export const WEBHOOK_EVENTS = [
  'process.created',
  'process.pending',
  'process.running',
  'process.waiting_review',
  'process.completed',
  'process.failed',
  'process.cancelled',
] as const

const Events = t.Array(t.UnionEnum(WEBHOOK_EVENTS), { minItems: 1, maxItems: WEBHOOK_EVENTS.length, uniqueItems: true })
const Types = t.Array(t.String({ pattern: TypePattern }), { minItems: 1, maxItems: 100, uniqueItems: true })
const Tags = t.Array(t.String({ minLength: 1, maxLength: 100, pattern: '^[^\\u0000]*$' }), { minItems: 1, maxItems: 100, uniqueItems: true })
const Url = t.String({ minLength: 1, maxLength: 2048, description: 'http or https' })

export const CreateWebhookBody = t.Object(
  {
    url: Url,
    events: Events,
    types: t.Optional(t.Union([Types, t.Null()], { description: 'only processes of these types (null or absent: every type)' })),
    tags: t.Optional(t.Union([Tags, t.Null()], { description: 'only processes whose metadata.tags holds one of these' })),
    enabled: t.Optional(t.Boolean()),
    workspace_id: t.Optional(Id),
  },
  { additionalProperties: false },
)
export type CreateWebhookBody = typeof CreateWebhookBody.static

export const PatchWebhookBody = t.Object(
  {
    url: t.Optional(Url),
    events: t.Optional(Events),
    types: t.Optional(t.Union([Types, t.Null()])),
    tags: t.Optional(t.Union([Tags, t.Null()])),
    enabled: t.Optional(t.Boolean()),
  },
  { additionalProperties: false, minProperties: 1 },
)
export type PatchWebhookBody = typeof PatchWebhookBody.static

export const Webhook = t.Object({
  id: Int(),
  workspace_id: Int(),
  url: t.String(),
  events: t.Array(t.String()),
  types: t.Union([t.Array(t.String()), t.Null()]),
  tags: t.Union([t.Array(t.String()), t.Null()]),
  enabled: t.Boolean(),
  created_by: t.Union([Int(), t.Null()]),
  created_at: Timestamp,
  updated_at: Timestamp,
})
export type Webhook = typeof Webhook.static

export const CreatedWebhook = t.Composite([
  Webhook,
  t.Object({ secret: t.String({ description: 'whsec_…: shown here once; verify each delivery with it (Standard Webhooks)' }) }),
])

export const DeliveryAttempt = t.Object({
  attempt: Int(),
  at: Timestamp,
  status: t.Union([Int(), t.Null()], { description: "the endpoint's HTTP status; null: no answer (refused, timed out, unreachable)" }),
  latency_ms: t.Union([Int(), t.Null()]),
  error: t.Union([t.String(), t.Null()]),
})

export const Delivery = t.Object({
  id: Int(),
  webhook_id: Int(),
  message_id: t.String({ description: 'Webhook-Id: the same on every attempt and redelivery' }),
  event: t.String(),
  process_id: Int(),
  state: t.UnionEnum(['pending', 'sending', 'succeeded', 'failed']),
  attempts: Int(),
  next_attempt_at: NullableTimestamp,
  created_at: Timestamp,
  last_attempt_at: NullableTimestamp,
  last_status: t.Union([Int(), t.Null()]),
  last_latency_ms: t.Union([Int(), t.Null()]),
  last_error: t.Union([t.String(), t.Null()]),
  log: t.Array(DeliveryAttempt, { description: 'the attempts, oldest first (the last 20)' }),
})
export type Delivery = typeof Delivery.static

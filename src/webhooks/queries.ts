// Runtime SQL for webhooks: the endpoints users manage, their delivery log, and the delivery loop's
// statements (claim, finish, reap, prune). The deliveries themselves are written by sql/012_webhooks.sql's
// triggers, in the transaction of the status change they announce.
import type { Sql } from '../db/client'
import type { Delivery, Webhook } from './model'

export interface WebhookRow extends Webhook {
  secret: string
}

export async function insertWebhook(
  sql: Sql,
  w: {
    workspace_id: number
    url: string
    events: string[]
    types: string[] | null
    tags: string[] | null
    enabled: boolean
    secret: string
    created_by: number
  },
): Promise<WebhookRow> {
  const [row] = await sql<WebhookRow[]>`
    insert into webhooks (workspace_id, url, events, types, tags, enabled, secret, created_by)
    values (${w.workspace_id}, ${w.url}, ${w.events}::text[], ${w.types}::text[], ${w.tags}::text[], ${w.enabled}, ${w.secret}, ${w.created_by})
    returning *`
  return row!
}

export async function listWebhooks(sql: Sql, workspaceId: number): Promise<Webhook[]> {
  return sql<Webhook[]>`
    select id, workspace_id, url, events, types, tags, enabled, created_by, created_at, updated_at
      from webhooks where workspace_id = ${workspaceId} order by id`
}

/** A webhook of one of these workspaces, without its secret; `lock` for a change in the same transaction. */
export async function getWebhook(sql: Sql, id: number, workspaceIds: number[], lock = false): Promise<Webhook | null> {
  const [row] = await sql<Webhook[]>`
    select id, workspace_id, url, events, types, tags, enabled, created_by, created_at, updated_at
      from webhooks where id = ${id} and workspace_id = any(${workspaceIds}::bigint[]) ${lock ? sql`for update` : sql``}`
  return row ?? null
}

export async function updateWebhook(
  sql: Sql,
  id: number,
  c: { url?: string; events?: string[]; types?: string[] | null; tags?: string[] | null; enabled?: boolean },
): Promise<Webhook> {
  const [row] = await sql<Webhook[]>`
    update webhooks set updated_at = now()
           ${c.url === undefined ? sql`` : sql`, url = ${c.url}`}
           ${c.events === undefined ? sql`` : sql`, events = ${c.events}::text[]`}
           ${c.types === undefined ? sql`` : sql`, types = ${c.types}::text[]`}
           ${c.tags === undefined ? sql`` : sql`, tags = ${c.tags}::text[]`}
           ${c.enabled === undefined ? sql`` : sql`, enabled = ${c.enabled}`}
     where id = ${id}
    returning id, workspace_id, url, events, types, tags, enabled, created_by, created_at, updated_at`
  return row!
}

export async function deleteWebhook(sql: Sql, id: number) {
  await sql`delete from webhooks where id = ${id}`
}

export const messageId = (deliveryId: number) => `msg_${deliveryId}`

interface DeliveryRow extends Omit<Delivery, 'message_id' | 'log'> {
  log: Delivery['log'] | null
}

const toDelivery = ({ log, ...row }: DeliveryRow): Delivery => ({
  ...row,
  message_id: messageId(row.id),
  next_attempt_at: row.state === 'pending' ? row.next_attempt_at : null,
  log: log ?? [],
})

/** A webhook's delivery log, newest first, each with its last attempts (webhook_deliveries_log_idx). */
export async function listDeliveries(sql: Sql, webhookId: number, limit: number, before?: number): Promise<Delivery[]> {
  const rows = await sql<DeliveryRow[]>`
    select d.id, d.webhook_id, d.event, d.process_id, d.state, d.attempts, d.next_attempt_at, d.created_at, d.last_attempt_at,
           d.last_status, d.last_latency_ms, d.last_error, a.log
      from webhook_deliveries d
      left join lateral (
        select json_agg(json_build_object('attempt', x.attempt, 'at', to_char(x.at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                                          'status', x.status, 'latency_ms', x.latency_ms, 'error', x.error) order by x.attempt) as log
          from (select * from webhook_attempts where delivery_id = d.id order by attempt desc limit 20) x
      ) a on true
     where d.webhook_id = ${webhookId} ${before ? sql`and d.id < ${before}` : sql``}
     order by d.id desc
     limit ${limit}`
  return rows.map(toDelivery)
}

/**
 * Sends a delivery again: back to pending, due now, with a new retry window; its Webhook-Id stays (a
 * receiver that already has it may skip it). A delivery being sent right now is left alone (null).
 */
export async function redeliver(sql: Sql, webhookId: number, deliveryId: number): Promise<Delivery | 'sending' | null> {
  const [current] = await sql<{ state: string }[]>`
    select state from webhook_deliveries where id = ${deliveryId} and webhook_id = ${webhookId} for update`
  if (!current) return null
  if (current.state === 'sending') return 'sending'
  await sql`
    update webhook_deliveries set state = 'pending', next_attempt_at = now(), window_start = now(), lease_until = null
     where id = ${deliveryId}`
  const [row] = await listDeliveries(sql, webhookId, 1, deliveryId + 1)
  return row ?? null
}

// ---------------------------------------------------------------------------------------------
// The delivery loop.

export interface Claimed {
  id: number
  webhook_id: number
  workspace_id: number
  url: string
  secret: string
  payload: string
  attempts: number
  window_start: string
}

/**
 * Takes up to `max` due deliveries for this instance to send, leased until now + leaseMs. It walks the
 * webhooks with pending deliveries from `afterWebhookId` on (a skip scan of webhook_deliveries_due_idx: one
 * probe per webhook, whatever its backlog), gives each enabled one as many as its endpoint has room for
 * (endpointMax minus what any instance is sending to it now), and locks them with skip locked, so every
 * instance can claim at once and none takes what another took. A dead endpoint with a deep backlog costs a
 * claim one probe, and holds no more than endpointMax sends.
 */
export async function claimDeliveries(sql: Sql, o: { max: number; endpointMax: number; leaseMs: number; afterWebhookId: number }): Promise<Claimed[]> {
  return sql<Claimed[]>`
    with recursive lanes as (
      (select webhook_id from webhook_deliveries where state = 'pending' and webhook_id > ${o.afterWebhookId} order by webhook_id limit 1)
      union all
      select n.webhook_id
        from lanes l cross join lateral (
          select webhook_id from webhook_deliveries
           where state = 'pending' and webhook_id > l.webhook_id
           order by webhook_id
           limit 1
        ) n
    ), room as (
      select l.webhook_id,
             ${o.endpointMax} - (select count(*) from webhook_deliveries s
                                  where s.state = 'sending' and s.webhook_id = l.webhook_id and s.lease_until > now()) as free
        from lanes l join webhooks w on w.id = l.webhook_id and w.enabled
    ), picked as (
      select d.id
        from room r cross join lateral (
          select id from webhook_deliveries d
           where d.state = 'pending' and d.webhook_id = r.webhook_id and d.next_attempt_at <= now()
           order by d.next_attempt_at, d.id
           limit greatest(r.free, 0)
           for update skip locked
        ) d
       limit ${o.max}
    ), taken as (
      update webhook_deliveries d
         set state = 'sending', attempts = d.attempts + 1, lease_until = now() + ${o.leaseMs} * interval '1 millisecond', last_attempt_at = now()
        from picked where d.id = picked.id
      returning d.id, d.webhook_id, d.payload, d.attempts, d.window_start
    )
    select t.id, t.webhook_id, w.workspace_id, w.url, w.secret, t.payload, t.attempts, t.window_start
      from taken t join webhooks w on w.id = t.webhook_id
     order by t.webhook_id, t.id`
}

export interface AttemptResult {
  id: number
  attempt: number
  at: string
  status: number | null
  latency_ms: number | null
  error: string | null
  ok: boolean
  /** Failed: the backoff before the next attempt (past the retry window, the delivery has failed). */
  delay_ms: number | null
}

/**
 * Records attempts (one statement for all of them) and moves their deliveries on: succeeded; pending again
 * after the backoff; or failed, when the next attempt would fall past window_start + windowMs. An attempt
 * whose lease another instance has since taken over (the delivery's attempt count moved on) is logged but
 * changes nothing.
 */
export async function finishAttempts(sql: Sql, results: AttemptResult[], windowMs: number) {
  if (results.length === 0) return
  await sql`
    with x as (
      select x.*, now() + coalesce(x.delay_ms, 0) * interval '1 millisecond' as next_at
        from jsonb_to_recordset(${JSON.stringify(results)}::text::jsonb)
          as x(id bigint, attempt int, at timestamptz, status int, latency_ms int, error text, ok boolean, delay_ms bigint)
    ), a as (
      insert into webhook_attempts (delivery_id, attempt, at, status, latency_ms, error)
      select x.id, x.attempt, x.at, x.status, x.latency_ms, x.error from x join webhook_deliveries d on d.id = x.id
      on conflict do nothing
    )
    update webhook_deliveries d
       set state = case when x.ok then 'succeeded'
                        when x.next_at > d.window_start + ${windowMs} * interval '1 millisecond' then 'failed'
                        else 'pending' end,
           next_attempt_at = case when x.ok then d.next_attempt_at else x.next_at end,
           lease_until = null, last_status = x.status, last_error = x.error, last_latency_ms = x.latency_ms
      from x
     where d.id = x.id and d.state = 'sending' and d.attempts = x.attempt`
}

/** Deliveries whose instance stopped while sending (lease expired): due again, with the lost attempt logged. */
export async function reapLeases(sql: Sql): Promise<number> {
  const rows = await sql`
    with r as (
      update webhook_deliveries set state = 'pending', next_attempt_at = now(), lease_until = null
       where state = 'sending' and lease_until < now()
      returning id, attempts, last_attempt_at
    ), a as (
      insert into webhook_attempts (delivery_id, attempt, at, error)
      select id, attempts, coalesce(last_attempt_at, now()), 'no result: the instance sending it stopped' from r
      on conflict do nothing
    )
    select id from r`
  return rows.length
}

/** Finished deliveries older than `days` (a bounded batch; their attempts go with them). */
export async function pruneDeliveries(sql: Sql, days: number): Promise<number> {
  const rows = await sql`
    delete from webhook_deliveries
     where id in (select id from webhook_deliveries
                   where state in ('succeeded', 'failed') and created_at < now() - ${days} * interval '1 day'
                   order by created_at limit 5000)
    returning id`
  return rows.length
}

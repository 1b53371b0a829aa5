// The client's REST calls (createApi) against a real listening server: the list's views, search and cursor,
// the reads a console makes, run-now and the bulk action with its preview; a refusal is a MonitorError.
import { describe, expect, it } from 'bun:test'
import { createApi, MonitorError } from '@processes/client'
import { createTenant, listeningServer, testDatabase } from '../support/helpers'

const { db } = await testDatabase()
const server = await listeningServer({}, db)
const tenant = await createTenant(db.sql)
const api = createApi(server.url, { token: tenant.token })

async function create(body: Record<string, unknown>) {
  const response = await fetch(`${server.url}/processes`, {
    method: 'POST',
    headers: { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  expect(response.status).toBe(201)
  return (await response.json()) as { id: number; version: number }
}

describe('createApi', () => {
  it('pages a list by its cursor, with views and search', async () => {
    const later = new Date(Date.now() + 3_600_000).toISOString()
    const made = []
    for (let i = 0; i < 5; i++) made.push(await create({ type: 'api_list', metadata: { n: `item-${i}` } }))
    const scheduled = await create({ type: 'api_list', run_at: later, metadata: { n: 'later' } })
    const first = await api.list({ type: 'api_list', limit: 4 })
    expect(first.items.map((p) => p.id)).toEqual([
      scheduled.id,
      ...made
        .slice(2)
        .map((p) => p.id)
        .reverse(),
    ])
    expect(first.next).toBe(made[2]!.id)
    const second = await api.list({ type: 'api_list', limit: 4, before: first.next! })
    expect(second).toEqual({ items: expect.any(Array), next: null })
    expect(second.items.map((p) => p.id)).toEqual([made[1]!.id, made[0]!.id])
    expect((await api.list({ view: 'scheduled' })).items.map((p) => p.id)).toEqual([scheduled.id])
    expect((await api.list({ q: 'ITEM-3' })).items.map((p) => p.id)).toEqual([made[3]!.id])
    expect((await api.list({ status: ['pending', 'running'], type: 'api_list' })).items).toHaveLength(6)
  })

  it('reads one process, its events and the stats with their view counts', async () => {
    const p = await create({ type: 'api_read' })
    expect((await api.get(p.id)).error_stack).toBeNull()
    expect((await api.events(p.id)).map((e) => e.stack)).toEqual([null])
    const stats = await api.stats({ buckets: false })
    expect(stats.workspace_id).toBe(tenant.workspaceId)
    expect(stats.buckets).toEqual([])
    expect(stats.views.scheduled).toBeGreaterThanOrEqual(1)
    expect((await api.queues()).queues.some((q) => q.type === 'api_read')).toBe(true)
    expect((await api.workers()).pending.some((q) => q.type === 'api_read')).toBe(true)
    expect(await api.schedules()).toEqual([])
  })

  it('runs a delayed process now, and says why not with the API error code', async () => {
    const p = await create({ type: 'api_now', delay_ms: 3_600_000 })
    const now = await api.runNow(p.id)
    expect(now.version).toBe(p.version + 1)
    const refused = await api.runNow(p.id).catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(MonitorError)
    expect(refused).toMatchObject({ status: 409, code: 'invalid_transition' })
    expect(await api.cancel(p.id)).toMatchObject({ status: 'cancelled' })
  })

  it('previews a bulk action, then applies it', async () => {
    for (let i = 0; i < 3; i++) await create({ type: 'api_bulk' })
    expect(await api.bulk('cancel', { type: 'api_bulk' }, { dryRun: true })).toEqual({
      action: 'cancel',
      workspace_id: tenant.workspaceId,
      matched: 3,
      dry_run: true,
    })
    expect(await api.bulk('cancel', { type: 'api_bulk' })).toMatchObject({ matched: 3, changed: 3, dry_run: false })
    const bad = await api.bulk('cancel', { view: 'nope' as never }).catch((e: unknown) => e)
    expect(bad).toMatchObject({ status: 422, code: 'invalid_request' })
  })
})

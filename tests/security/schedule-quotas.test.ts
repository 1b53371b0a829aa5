// A schedule's ticks are creates like any other: they count against the workspace's quotas, and past one a
// tick makes no process but a run row that says which quota refused it — the queue does not grow without
// bound because a schedule keeps ticking while no worker takes its processes.
import { describe, expect, it } from 'bun:test'
import { ScheduleLoop } from '../../src/schedules/loop'
import { createTenant, inProcessApp } from '../support/helpers'

const MAX_PENDING = 3
const { s, request } = await inProcessApp({
  WORKSPACE_MAX_PENDING: String(MAX_PENDING),
  WORKSPACE_MAX_PENDING_TYPES: '2',
  SCHEDULE_MIN_INTERVAL_MS: '1000',
  SCHEDULE_GRACE_MS: '10000',
})
const { sql } = s
const loop = new ScheduleLoop(s)
const iso = (ms: number) => new Date(ms).toISOString()

async function schedule(token: string, body: object): Promise<number> {
  const created = await request('POST', '/schedules', { token, body })
  expect(created.status).toBe(201)
  return created.body.id
}
const pendingOf = async (workspaceId: number) =>
  Number((await sql`select count(*) as n from processes where workspace_id = ${workspaceId} and status = 'pending'`)[0]!.n)

describe('schedule ticks and workspace quotas', () => {
  it('creates processes only up to WORKSPACE_MAX_PENDING and records the other ticks as skipped for that quota', async () => {
    const tenant = await createTenant(sql)
    const id = await schedule(tenant.token, { type: 'ticking', cron: '* * * * *', catch_up: 'all' })
    // Ten minutes of ticks due at once (every instance was down): the quota admits three.
    const now = Date.parse('2026-08-01T12:00:30Z')
    await sql`update schedules set enabled = false where id <> ${id}`
    await sql`update schedules set last_tick_at = ${iso(now - 10 * 60_000 - 30_000)}, next_tick_at = ${iso(now - 10 * 60_000)} where id = ${id}`
    await loop.pass(now)
    expect(await pendingOf(tenant.workspaceId)).toBe(MAX_PENDING)
    const runs = await request('GET', `/schedules/${id}/runs`, { token: tenant.token })
    expect(runs.status).toBe(200)
    const oldestFirst = [...runs.body].reverse()
    expect(oldestFirst).toHaveLength(10)
    expect(oldestFirst.slice(0, MAX_PENDING).every((r: any) => r.process_id !== null && r.skipped === null && r.quota === null)).toBe(true)
    expect(oldestFirst.slice(MAX_PENDING).map((r: any) => [r.process_id, r.skipped, r.quota])).toEqual(
      Array.from({ length: 10 - MAX_PENDING }, () => [null, 'quota', 'WORKSPACE_MAX_PENDING']),
    )
    expect(loop.ticksSkippedQuota).toBe(10 - MAX_PENDING)
    expect(loop.ticksRun).toBe(MAX_PENDING)

    // Still at the quota: the next on-time tick is skipped too, and the queue stays at three.
    await loop.pass(Date.parse('2026-08-01T12:01:00.5Z'))
    expect(await pendingOf(tenant.workspaceId)).toBe(MAX_PENDING)
    // Workers drain it: the next tick runs again.
    await sql`update processes set status = 'cancelled', finished_at = now() where workspace_id = ${tenant.workspaceId} and status = 'pending'`
    await loop.pass(Date.parse('2026-08-01T12:02:00.5Z'))
    expect(await pendingOf(tenant.workspaceId)).toBe(1)
    const latest = (await request('GET', `/schedules/${id}/runs?limit=1`, { token: tenant.token })).body[0]
    expect(latest).toMatchObject({ tick: '2026-08-01T12:02:00.000Z', skipped: null, quota: null })
    expect(latest.process_id).not.toBeNull()
  })

  it('names WORKSPACE_MAX_PENDING_TYPES when a schedule would add a pending type past it, and leaves other workspaces alone', async () => {
    const tenant = await createTenant(sql)
    const neighbour = await createTenant(sql)
    for (const type of ['kept_a', 'kept_b']) expect((await request('POST', '/processes', { token: tenant.token, body: { type } })).status).toBe(201)
    const id = await schedule(tenant.token, { type: 'third_type', cron: '* * * * *', catch_up: 'none' })
    const theirs = await schedule(neighbour.token, { type: 'third_type', cron: '* * * * *', catch_up: 'none' })
    const at = Date.parse('2026-08-02T09:00:00Z')
    await sql`update schedules set enabled = (id = any(${[id, theirs]}::bigint[]))`
    await sql`update schedules set last_tick_at = ${iso(at - 60_000)}, next_tick_at = ${iso(at)} where id = any(${[id, theirs]}::bigint[])`
    await loop.pass(at + 500)
    const [mine] = (await request('GET', `/schedules/${id}/runs`, { token: tenant.token })).body
    expect(mine).toMatchObject({ skipped: 'quota', quota: 'WORKSPACE_MAX_PENDING_TYPES', process_id: null })
    const [neighbours] = (await request('GET', `/schedules/${theirs}/runs`, { token: neighbour.token })).body
    expect(neighbours).toMatchObject({ skipped: null, quota: null })
    expect(await pendingOf(neighbour.workspaceId)).toBe(1)
  })
})

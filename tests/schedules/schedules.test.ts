// Schedules (README: Schedules) in-process: the routes and their 422s, and the tick loop's passes run with an
// injected clock — DST switches, a 10-minute outage under each catch_up mode, overlap skip. The rule across
// instances (one process per tick) is in tests/queues/instances.test.ts.
import { beforeEach, describe, expect, it } from 'bun:test'
import { createApiToken, createUser } from '../../src/auth/queries'
import { ScheduleLoop } from '../../src/schedules/loop'
import { planTicks } from '../../src/schedules/ticks'
import { runCommand } from '../../src/cli'
import { createTenant, inProcessApp } from '../support/helpers'

const { s, request } = await inProcessApp({ SCHEDULE_MIN_INTERVAL_MS: '2000', SCHEDULE_GRACE_MS: '10000' })
const { sql } = s
const tenant = await createTenant(sql)
const other = await createTenant(sql)
const loop = new ScheduleLoop(s)

const post = (body: unknown, token = tenant.token) => request('POST', '/schedules', { token, body })
const iso = (ms: number) => new Date(ms).toISOString()

async function roleToken(role: string) {
  const user = await createUser(sql, `${role}-${Math.random().toString(36).slice(2)}@example.com`, tenant.workspaceId, role)
  return (await createApiToken(sql, user.id, role, null)).token
}

/** Each injected-clock test's passes see only its own schedules (the clock jumps around the year). */
async function onlyNewSchedules() {
  await sql`update schedules set enabled = false`
}

/** Puts a schedule's last handled tick at `ms` and makes it due from there, as if every instance had been down since. */
async function lastTickAt(id: number, ms: number) {
  await sql`update schedules set last_tick_at = ${iso(ms)}, next_tick_at = ${iso(ms)} where id = ${id}`
}

const runsOf = async (id: number) =>
  (
    await sql<{ tick: string; process_id: number | null; skipped: string | null }[]>`
    select tick, process_id, skipped from schedule_runs where schedule_id = ${id} order by tick`
  ).map((r) => ({ ...r, tick: new Date(r.tick).toISOString() }))

describe('the schedule routes', () => {
  it('creates a schedule with its next runs, reads, lists, changes and deletes it, auditing each change', async () => {
    const created = await post({
      type: 'report',
      cron: '0 9 * * 1-5',
      timezone: 'Europe/Berlin',
      metadata: { kind: 'daily' },
      overlap: 'skip',
      catch_up: 'none',
    })
    expect(created.status).toBe(201)
    expect(created.headers.get('location')).toBe(`/schedules/${created.body.id}`)
    expect(created.body).toMatchObject({
      type: 'report',
      cron: '0 9 * * 1-5',
      timezone: 'Europe/Berlin',
      overlap: 'skip',
      catch_up: 'none',
      enabled: true,
      max_attempts: null,
    })
    expect(created.body.next_runs).toHaveLength(5)
    // 09:00 in Berlin is 07:00 or 08:00 UTC, on weekdays only.
    for (const run of created.body.next_runs as string[]) {
      const d = new Date(run)
      expect([7, 8]).toContain(d.getUTCHours())
      expect([1, 2, 3, 4, 5]).toContain(d.getUTCDay())
    }
    const id = created.body.id
    expect((await request('GET', `/schedules/${id}`, { token: tenant.token })).body.id).toBe(id)
    expect((await request('GET', '/schedules', { token: tenant.token })).body.map((x: any) => x.id)).toContain(id)
    const patched = await request('PATCH', `/schedules/${id}`, { token: tenant.token, body: { enabled: false, priority: 5 } })
    expect(patched.status).toBe(200)
    expect(patched.body).toMatchObject({ enabled: false, priority: 5, next_runs: [] })
    expect((await request('DELETE', `/schedules/${id}`, { token: tenant.token })).status).toBe(204)
    expect((await request('GET', `/schedules/${id}`, { token: tenant.token })).status).toBe(404)
    const audited = await sql<{ method: string; status: number }[]>`
      select method, status from audit_log where route like '/schedules%' and method <> 'GET' and user_id = ${tenant.userId} order by id`
    expect(audited.map((a) => `${a.method} ${a.status}`)).toEqual(['POST 201', 'PATCH 200', 'DELETE 204'])
  })

  it("defaults overlap to 'allow' and catch_up to 'latest', and a PATCH changes only the fields it names", async () => {
    const created = await post({ type: 'defaults', cron: '0 * * * *' })
    expect(created.body).toMatchObject({ overlap: 'allow', catch_up: 'latest', timezone: 'UTC', priority: 0 })
    const id = created.body.id
    await request('PATCH', `/schedules/${id}`, { token: tenant.token, body: { overlap: 'skip', catch_up: 'all' } })
    const patched = await request('PATCH', `/schedules/${id}`, { token: tenant.token, body: { priority: 3 } })
    expect(patched.body).toMatchObject({ overlap: 'skip', catch_up: 'all', priority: 3 })
    await request('DELETE', `/schedules/${id}`, { token: tenant.token })
  })

  it('answers 422 naming what is wrong: a bad cron, an unknown time zone, a schedule too frequent, one that never ticks', async () => {
    const cases: Array<[unknown, string]> = [
      [{ type: 'x', cron: '61 * * * *' }, '/cron'],
      [{ type: 'x', cron: 'every day' }, '/cron'],
      [{ type: 'x', cron: '0 0 30 2 *' }, '/cron'],
      [{ type: 'x', cron: '0 * * * *', timezone: 'Mars/Olympus' }, '/timezone'],
      [{ type: 'x', cron: '0 * * * *', overlap: 'sometimes' }, '/overlap'],
      [{ type: 'x', cron: '0 * * * *', catch_up: 'some' }, '/catch_up'],
      [{ type: 'Bad Type', cron: '0 * * * *' }, '/type'],
    ]
    for (const [body, path] of cases) {
      const res = await post(body)
      expect({ body, status: res.status, code: res.body.error.code }).toEqual({ body, status: 422, code: 'invalid_request' })
      expect(res.body.error.message).toContain(path)
    }
    // This server's SCHEDULE_MIN_INTERVAL_MS is 2 s: every second is refused, and the message says why.
    const refused = await post({ type: 'x', cron: '* * * * * *' })
    expect(refused.status).toBe(422)
    expect(refused.body.error.message).toContain('SCHEDULE_MIN_INTERVAL_MS')
    expect((await post({ type: 'x', cron: '*/2 * * * * *' })).status).toBe(201)
  })

  it("lets a viewer read but not change, and hides another workspace's schedules (404)", async () => {
    const id = (await post({ type: 'x', cron: '0 0 * * *' })).body.id
    const viewer = await roleToken('viewer')
    expect((await request('GET', `/schedules/${id}`, { token: viewer })).status).toBe(200)
    expect((await post({ type: 'x', cron: '0 0 * * *' }, viewer)).status).toBe(403)
    expect((await request('PATCH', `/schedules/${id}`, { token: viewer, body: { enabled: false } })).status).toBe(403)
    expect((await request('DELETE', `/schedules/${id}`, { token: viewer })).status).toBe(403)
    for (const [method, path] of [
      ['GET', `/schedules/${id}`],
      ['PATCH', `/schedules/${id}`],
      ['DELETE', `/schedules/${id}`],
      ['GET', `/schedules/${id}/runs`],
    ] as const) {
      const res = await request(method, path, { token: other.token, body: method === 'PATCH' ? { enabled: false } : undefined })
      expect({ method, status: res.status }).toEqual({ method, status: 404 })
    }
  })

  it('lists schedules with their next runs in the CLI', async () => {
    const id = (await post({ type: 'cli_listed', cron: '*/10 * * * *' })).body.id
    const out = (await runCommand(sql, ['list-schedules', '--workspace', String(tenant.workspaceId)])) as any
    const listed = out.schedules.find((x: any) => x.id === id)
    expect(listed).toMatchObject({ type: 'cli_listed', cron: '*/10 * * * *', enabled: true })
    expect(listed.next_runs).toHaveLength(5)
    for (const run of listed.next_runs) expect(new Date(run).getUTCMinutes() % 10).toBe(0)
  })
})

describe('ticks, with an injected clock', () => {
  beforeEach(onlyNewSchedules)

  it('runs a fixed-time job in a spring-forward gap once, right after the gap, and once on a fall-back day', async () => {
    // Europe/Berlin jumps from 02:00 to 03:00 on 2026-03-29: 02:30 does not exist; croner runs it at 03:00 CEST.
    const spring = (await post({ type: 'dst_fixed', cron: '30 2 * * *', timezone: 'Europe/Berlin', catch_up: 'none' })).body.id
    await lastTickAt(spring, Date.parse('2026-03-27T12:00:00Z'))
    for (const at of ['2026-03-28T01:30:00.2Z', '2026-03-29T01:00:00.2Z', '2026-03-30T00:30:00.2Z']) await loop.pass(Date.parse(at))
    expect((await runsOf(spring)).map((r) => r.tick)).toEqual(['2026-03-28T01:30:00.000Z', '2026-03-29T01:00:00.000Z', '2026-03-30T00:30:00.000Z'])
    // America/New_York repeats 01:00–02:00 on 2026-11-01: 01:30 comes twice, the job runs once.
    const fall = (await post({ type: 'dst_fixed', cron: '30 1 * * *', timezone: 'America/New_York', catch_up: 'none' })).body.id
    await lastTickAt(fall, Date.parse('2026-11-01T00:00:00Z'))
    for (const at of ['2026-11-01T05:30:00.2Z', '2026-11-01T06:30:00.2Z', '2026-11-02T06:30:00.2Z']) await loop.pass(Date.parse(at))
    expect((await runsOf(fall)).map((r) => r.tick)).toEqual(['2026-11-01T05:30:00.000Z', '2026-11-02T06:30:00.000Z'])
  })

  it('keeps an hourly job hourly in real time across both switches (no hour in the gap, the repeated hour twice)', async () => {
    const id = (await post({ type: 'dst_hourly', cron: '0 * * * *', timezone: 'America/New_York', catch_up: 'all' })).body.id
    await lastTickAt(id, Date.parse('2026-11-01T04:30:00Z'))
    await loop.pass(Date.parse('2026-11-01T08:30:00Z'))
    // 01:00 EDT, 01:00 EST, 02:00 EST, 03:00 EST: four real hours, four runs.
    expect((await runsOf(id)).map((r) => r.tick)).toEqual([
      '2026-11-01T05:00:00.000Z',
      '2026-11-01T06:00:00.000Z',
      '2026-11-01T07:00:00.000Z',
      '2026-11-01T08:00:00.000Z',
    ])
    const spring = planTicks(
      { cron: '0 * * * *', timezone: 'Europe/Berlin', catch_up: 'all', lastTickMs: Date.parse('2026-03-28T23:30:00Z') },
      Date.parse('2026-03-29T03:30:00Z'),
      0,
    )
    // 01:00 CET, 03:00 CEST (02:00 does not exist), 04:00, 05:00: every real hour once.
    expect(spring.run.map(iso)).toEqual(['2026-03-29T00:00:00.000Z', '2026-03-29T01:00:00.000Z', '2026-03-29T02:00:00.000Z', '2026-03-29T03:00:00.000Z'])
  })

  it('after a 10-minute outage runs nothing, the latest, or every missed tick, as catch_up says', async () => {
    // A minute schedule whose instances were all down for 10 minutes; the pass comes 30 s after the last
    // minute (past SCHEDULE_GRACE_MS, 10 s): every due tick was missed.
    const now = Date.parse('2026-06-01T12:00:30Z')
    const created: Record<string, number> = {}
    for (const mode of ['none', 'latest', 'all'] as const) {
      const id = (await post({ type: `outage_${mode}`, cron: '* * * * *', catch_up: mode })).body.id
      await lastTickAt(id, now - 10 * 60_000 - 30_000)
      created[mode] = id
    }
    await loop.pass(now)
    const ticks = async (mode: string) => (await runsOf(created[mode]!)).map((r) => r.tick)
    expect(await ticks('none')).toEqual([])
    expect(await ticks('latest')).toEqual(['2026-06-01T12:00:00.000Z'])
    expect(await ticks('all')).toEqual(Array.from({ length: 10 }, (_, i) => iso(Date.parse('2026-06-01T11:51:00Z') + i * 60_000)))
    // Each run is a process of the schedule's type, its tick in metadata._schedule; and the next tick is 12:01.
    const [run] = await runsOf(created.latest!)
    const [process] = await sql`select type, metadata from processes where id = ${run!.process_id}`
    expect(process!.type).toBe('outage_latest')
    expect(process!.metadata._schedule).toEqual({ id: created.latest, tick: '2026-06-01T12:00:00.000Z' })
    for (const mode of ['none', 'latest', 'all']) {
      const [row] = await sql`select next_tick_at from schedules where id = ${created[mode]!}`
      expect(new Date(row!.next_tick_at).toISOString()).toBe('2026-06-01T12:01:00.000Z')
    }
    // An on-time tick runs under every mode, none included.
    await loop.pass(Date.parse('2026-06-01T12:01:00.5Z'))
    expect((await ticks('none')).at(-1)).toBe('2026-06-01T12:01:00.000Z')
  })

  it("skips a tick while the last run is pending or running (overlap 'skip'), and runs again once it has finished", async () => {
    const id = (await post({ type: 'overlapping', cron: '* * * * *', overlap: 'skip', catch_up: 'none' })).body.id
    const t0 = Date.parse('2026-07-01T08:00:00Z')
    await lastTickAt(id, t0 - 60_000)
    await loop.pass(t0 + 100)
    await loop.pass(t0 + 60_000 + 100)
    let runs = await runsOf(id)
    expect(runs.map((r) => [r.tick, r.process_id !== null, r.skipped])).toEqual([
      [iso(t0), true, null],
      [iso(t0 + 60_000), false, 'overlap'],
    ])
    await sql`update processes set status = 'cancelled', finished_at = now() where id = ${runs[0]!.process_id}`
    await loop.pass(t0 + 120_000 + 100)
    runs = await runsOf(id)
    expect(runs.at(-1)).toMatchObject({ tick: iso(t0 + 120_000), skipped: null })
    expect(runs.at(-1)!.process_id).not.toBeNull()
    // The runs, newest first, over the API.
    const listed = await request('GET', `/schedules/${id}/runs`, { token: tenant.token })
    expect(listed.body.map((r: any) => r.skipped)).toEqual([null, 'overlap', null])
  })
})

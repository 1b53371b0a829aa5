// Job metrics on /metrics (queue depth by type and status, wait and run time histograms, completions and
// failures per type) and GET /processes/stats (the dashboard's counts and time buckets), against a real
// server with a real worker.
import { describe, expect, it } from 'bun:test'
import { createTenant, listeningServer, restAs, testDatabase, waitFor, workerToken } from '../support/helpers'
import { TestWorker } from '../support/worker-client'

const { db } = await testDatabase()
const server = await listeningServer({}, db)
const tenant = await createTenant(db.sql)
const other = await createTenant(db.sql)
const rest = restAs(server.url, tenant.token)
const metric = (text: string, line: string) => {
  const found = text.split('\n').find((l) => l.startsWith(`${line} `))
  return found === undefined ? undefined : Number(found.slice(line.length + 1))
}

describe('job metrics', () => {
  it('counts completions and failures per type, observes wait and run time, and samples queue depth', async () => {
    const worker = await TestWorker.connect(server.url, await workerToken(db.sql))
    const a = await rest.create('jm_import')
    const b = await rest.create('jm_import')
    await rest.create('jm_waiting') // stays pending: queue depth
    const first = (await worker.request({ op: 'claim', types: ['jm_import'] })).process
    expect((await worker.request({ op: 'complete', process_id: first.id, attempt: first.attempts })).op).toBe('ack')
    const second = (await worker.request({ op: 'claim', types: ['jm_import'] })).process
    expect((await worker.request({ op: 'fail', process_id: second.id, attempt: second.attempts, error: 'boom' })).op).toBe('ack')
    expect([first.id, second.id].sort()).toEqual([a.id, b.id].sort())
    worker.close()

    let text = ''
    await waitFor(
      async () => {
        text = await (await fetch(server.metricsUrl!)).text()
        return metric(text, 'processes_jobs_failed_total{type="jm_import"}') === 1
      },
      15_000,
      'the failure counted',
    )
    expect(metric(text, 'processes_jobs_completed_total{type="jm_import"}')).toBe(1)
    expect(metric(text, 'processes_job_wait_seconds_count{type="jm_import"}')).toBe(2)
    expect(metric(text, 'processes_job_wait_seconds_bucket{type="jm_import",le="+Inf"}')).toBe(2)
    expect(metric(text, 'processes_job_run_seconds_count{type="jm_import"}')).toBe(2)
    expect(metric(text, 'processes_queue_depth{type="jm_waiting",status="pending"}')).toBe(1)
    expect(text).toContain('# TYPE processes_job_run_seconds histogram')
    // Buckets are cumulative and end at the count.
    const buckets = text
      .split('\n')
      .filter((l) => l.startsWith('processes_job_run_seconds_bucket{type="jm_import"'))
      .map((l) => Number(l.split(' ')[1]))
    expect(buckets).toEqual([...buckets].sort((x, y) => x - y))
    expect(buckets.at(-1)).toBe(2)
  }, 30_000)

  it('GET /processes/stats: counts by type and status, and the finished ones in the current bucket', async () => {
    const response = await fetch(`${server.url}/processes/stats?window=1h`, { headers: rest.auth })
    expect(response.status).toBe(200)
    const body = (await response.json()) as any
    expect(body).toMatchObject({ workspace_id: tenant.workspaceId, window: '1h', bucket_seconds: 60 })
    expect(body.counts).toEqual(
      expect.arrayContaining([
        { type: 'jm_import', status: 'completed', count: 1 },
        { type: 'jm_import', status: 'failed', count: 1 },
        { type: 'jm_waiting', status: 'pending', count: 1 },
      ]),
    )
    expect(body.buckets.length).toBe(60)
    const totals = body.buckets.reduce(
      (sum: any, b: any) => ({ created: sum.created + b.created, completed: sum.completed + b.completed, failed: sum.failed + b.failed }),
      { created: 0, completed: 0, failed: 0 },
    )
    expect(totals).toEqual({ created: 3, completed: 1, failed: 1 })
    expect(body.buckets.some((b: any) => b.run_p50_s !== null && b.wait_p95_s !== null)).toBe(true)
    // The counts alone, for the dashboard's tabs.
    const counts = (await (await fetch(`${server.url}/processes/stats?buckets=false`, { headers: rest.auth })).json()) as any
    expect(counts.counts).toEqual(body.counts)
    expect(counts.buckets).toEqual([])
  })

  it("never shows another workspace's figures, and refuses a bad window with 422", async () => {
    const mine = (await (await fetch(`${server.url}/processes/stats`, { headers: { authorization: `Bearer ${other.token}` } })).json()) as any
    expect(mine.counts).toEqual([])
    const foreign = await fetch(`${server.url}/processes/stats?workspace_id=${tenant.workspaceId}`, { headers: { authorization: `Bearer ${other.token}` } })
    expect(foreign.status).toBe(403)
    expect((await fetch(`${server.url}/processes/stats?window=2y`, { headers: rest.auth })).status).toBe(422)
    expect((await fetch(`${server.url}/processes/stats`)).status).toBe(401)
  })
})

// GET /workers: connected workers across instances (written to worker_sessions by the instance holding each
// socket), their leases in the caller's workspace with the last heartbeat, and the pending types no connected
// worker claims. Two instances on one database; the worker is a real `ws` client on the first, the page asks
// the second.
import { describe, expect, it } from 'bun:test'
import { createWorkerToken } from '../../src/auth/queries'
import { createTenant, listeningServer, restAs, testDatabase, waitFor, workerToken } from '../support/helpers'
import { TestWorker } from '../support/worker-client'

const { db } = await testDatabase()
const one = await listeningServer({}, db)
const two = await listeningServer({}, db)
const acme = await createTenant(db.sql, 'Acme')
const globex = await createTenant(db.sql, 'Globex')
const workersAs = async (token: string) => (await (await fetch(`${two.url}/workers`, { headers: { authorization: `Bearer ${token}` } })).json()) as any

describe('GET /workers', () => {
  it('lists a worker connected to another instance, its lease here with its heartbeat, and the types nobody claims', async () => {
    const rest = restAs(one.url, acme.token)
    const job = await rest.create('wp_import')
    const orphan = await rest.create('wp_orphan')
    void orphan
    const worker = await TestWorker.connect(one.url, await workerToken(db.sql))
    expect((await worker.request({ op: 'hello', worker_id: 'wp-worker-1' })).op).toBe('ack')
    const claimed = (await worker.request({ op: 'claim', types: ['wp_import'] })).process
    expect(claimed.id).toBe(job.id)
    expect((await worker.request({ op: 'heartbeat', process_id: job.id, attempt: claimed.attempts })).op).toBe('ack')

    let page: any
    await waitFor(
      async () => {
        page = await workersAs(acme.token)
        return page.workers.some((w: any) => w.worker_id === 'wp-worker-1' && w.types?.includes('wp_import'))
      },
      20_000,
      'the worker on the page of the other instance',
    )
    const listed = page.workers.find((w: any) => w.worker_id === 'wp-worker-1')
    expect(listed).toMatchObject({ connected: true, connections: 1, types: ['wp_import'] })
    expect(listed.instances.length).toBe(1)
    expect(listed.leases).toEqual([expect.objectContaining({ process_id: job.id, type: 'wp_import', attempt: 1 })])
    expect(Date.parse(listed.leases[0].heartbeat_at)).toBeGreaterThan(0)
    expect(Date.parse(listed.last_frame_at)).toBeGreaterThanOrEqual(Date.parse(listed.connected_at))
    expect(page.pending).toEqual([{ type: 'wp_orphan', count: 1, covered: false }])

    // Another workspace sees the shared worker, none of Acme's leases or pending work.
    const other = await workersAs(globex.token)
    expect(other.workers.find((w: any) => w.worker_id === 'wp-worker-1')).toMatchObject({ connected: true, leases: [] })
    expect(other.pending).toEqual([])
    expect(JSON.stringify(other)).not.toContain('process_id')

    // Gone: a worker that still holds a lease here stays listed, as not connected.
    worker.close()
    await waitFor(
      async () => (await workersAs(acme.token)).workers.find((w: any) => w.worker_id === 'wp-worker-1')?.connected === false,
      20_000,
      'the worker shown as disconnected',
    )
    expect((await fetch(`${two.url}/workers`)).status).toBe(401)
    expect((await fetch(`${two.url}/workers?workspace_id=${acme.workspaceId}`, { headers: { authorization: `Bearer ${globex.token}` } })).status).toBe(403)
  }, 60_000)

  it("shows a worker scoped to another workspace to no one but that workspace's members", async () => {
    const scoped = await TestWorker.connect(one.url, (await createWorkerToken(db.sql, 'globex only', { workspaceIds: [globex.workspaceId] })).token)
    expect((await scoped.request({ op: 'hello', worker_id: 'wp-globex-only' })).op).toBe('ack')
    await waitFor(
      async () => (await workersAs(globex.token)).workers.some((w: any) => w.worker_id === 'wp-globex-only'),
      20_000,
      'the scoped worker on its own workspace page',
    )
    expect((await workersAs(acme.token)).workers.some((w: any) => w.worker_id === 'wp-globex-only')).toBe(false)
    scoped.close()
  }, 30_000)
})

// SIGTERM on a real server with open streams and a worker mid-process (README: Deployment).
import { describe, expect, it } from 'bun:test'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openDatabase } from '../../src/db/client'
import { migrate } from '../../src/db/migrate'
import { createTenant, freshDatabaseUrl, hasPostgres, redisPrefix, spawnServer, waitFor, workerToken } from '../support/helpers'
import { openEventSource, readFrames } from '../support/sse-client'
import { TestWorker } from '../support/worker-client'

describe('graceful shutdown', () => {
  it('ends streams cleanly, closes worker sockets with 1012, keeps every committed change and exits 0 within 10 s', async () => {
    let env: Record<string, string | undefined>
    let sqlUrl: string | undefined
    if (hasPostgres) {
      sqlUrl = await freshDatabaseUrl()
      env = { DATABASE_URL: sqlUrl, REDIS_URL: process.env.REDIS_URL, REDIS_PREFIX: redisPrefix() }
    } else {
      env = { DATA_DIR: mkdtempSync(join(tmpdir(), 'ps-shutdown-')), DATABASE_URL: '', REDIS_URL: '' }
    }
    // Tenants are made before the server starts: an embedded database belongs to one process at a time.
    const setup = await openDatabase({ url: sqlUrl, dataDir: env.DATA_DIR ?? '', poolMax: 2 })
    await migrate(setup.sql)
    const tenant = await createTenant(setup.sql)
    const wtoken = await workerToken(setup.sql)
    await setup.close()

    const server = await spawnServer({ ...env, PROGRESS_PERSIST_MS: '2000' })
    const other = hasPostgres ? await spawnServer(env) : null
    const auth = { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' }
    const p = (await (await fetch(`${server.url}/processes`, { method: 'POST', headers: auth, body: JSON.stringify({ type: 'shutdown' }) })).json()) as any

    const worker = await TestWorker.connect(server.url, wtoken)
    await worker.request({ op: 'hello', worker_id: 'survivor' })
    const run = (await worker.request({ op: 'claim', types: ['shutdown'] })).process
    await worker.request({ op: 'progress', process_id: p.id, progress: 10, attempt: run.attempts })
    // This one is coalesced (flush interval 2 s) and not yet written when SIGTERM arrives: shutdown must flush it.
    const pendingAck = worker.request({ op: 'progress', process_id: p.id, progress: 20, message: 'queued at shutdown', attempt: run.attempts })

    const raw = fetch(`${server.url}/processes/${p.id}/stream`, { headers: auth }).then((r) => readFrames(r, { maxMs: 15_000 }))
    const { received } = openEventSource(`${server.url}/processes/${p.id}/stream`, tenant.token)
    await waitFor(() => received.messages.length >= 1)
    await Bun.sleep(100)

    const started = Date.now()
    const code = await server.kill('SIGTERM')
    const elapsed = Date.now() - started
    expect(code).toBe(0)
    expect(elapsed).toBeLessThan(10_000)
    const stream = await raw
    expect(stream.ended).toBe(true) // the response ended; it was not cut mid-frame
    expect(stream.text.endsWith('\n\n')).toBe(true)
    await worker.until(() => worker.closeCode !== null)
    expect(worker.closeCode).toBe(1012)
    expect((await pendingAck).op).toBe('ack')

    if (other) {
      // Committed before exit, visible from the other instance; the worker resumes there with its lease.
      const seen = (await (await fetch(`${other.url}/processes/${p.id}`, { headers: auth })).json()) as any
      expect(seen).toMatchObject({ status: 'running', progress: 20, message: 'queued at shutdown', worker_id: 'survivor' })
      const again = await TestWorker.connect(other.url, wtoken)
      expect((await again.request({ op: 'hello', worker_id: 'survivor' })).processes).toContain(p.id)
      expect((await again.request({ op: 'complete', process_id: p.id, attempt: run.attempts })).op).toBe('ack')
      again.close()
      // The audit rows of the reads made just before the signal were flushed on the way out.
      const db = await openDatabase({ url: sqlUrl, dataDir: '', poolMax: 1 })
      const rows = await db.sql<{ n: number }[]>`select count(*)::int as n from audit_log where route = '/processes/:id/stream'`
      expect(rows[0]!.n).toBeGreaterThanOrEqual(2)
      await db.close()
    } else {
      // Embedded: restart on the same data directory and find the flushed progress there.
      const restarted = await spawnServer(env)
      const seen = (await (await fetch(`${restarted.url}/processes/${p.id}`, { headers: auth })).json()) as any
      expect(seen).toMatchObject({ status: 'running', progress: 20, message: 'queued at shutdown' })
      await restarted.kill('SIGTERM')
    }
  }, 60_000)
})

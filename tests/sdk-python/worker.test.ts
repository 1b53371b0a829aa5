// The Python worker SDK (sdk/python) against a real listening server: claims (batch, claim-next, threads),
// progress seen on the SSE stream, a user's cancel reaching the running handler, fencing after a lease
// time-out, a refused token; reconnect after a server restart is in restart.test.ts.
import { afterAll, describe, expect, it } from 'bun:test'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createWorkerToken, revokeToken } from '../../src/auth/queries'
import { OPS } from '../../src/workers/model'
import { collectOutput, createTenant, listeningServer, ROOT, restAs, testDatabase, waitFor, workerToken } from '../support/helpers'
import { openStream } from '../support/sse-client'
import { endsCleanly, MISSING_PYTHON, PYTHON, PYTHON_REQUIRED, runScenario } from './python'

if (!PYTHON && PYTHON_REQUIRED) {
  it('has a python with websockets (required in CI)', () => {
    throw new Error(MISSING_PYTHON)
  })
}

describe.skipIf(!PYTHON)('the Python worker SDK against the server', async () => {
  const { db } = await testDatabase()
  // A short lease so the fencing test times one out; the other scenarios heartbeat every 0.3 s.
  const server = await listeningServer({ JOB_TIMEOUT_MS: '1500', RETRY_BASE_MS: '0', AUTH_CACHE_MS: '200', PROGRESS_PERSIST_MS: '20', SSE_MAX_MS: '5000' }, db)
  const tenant = await createTenant(db.sql)
  const wtoken = await workerToken(db.sql)
  const rest = restAs(server.url, tenant.token)
  const create = async (type: string, body: Record<string, unknown> = {}) => {
    const response = await fetch(`${server.url}/processes`, { method: 'POST', headers: rest.auth, body: JSON.stringify({ type, ...body }) })
    expect(response.status).toBe(201)
    return (await response.json()) as any
  }
  const env = (type: string) => ({ PROCESSES_URL: server.url, WORKER_TOKEN: wtoken, TYPE: type })
  const runs: { kill(): void }[] = []
  afterAll(() => {
    for (const run of runs) run.kill()
  })
  const scenario = (name: string, type: string) => {
    const run = runScenario(name, env(type))
    runs.push(run)
    return run
  }

  it('claims in batches, completes with results, fails on a raise, asks for review, and runs sync handlers in threads', async () => {
    const made = [] as any[]
    for (let n = 0; n < 6; n++) made.push(await create('py_claims', { metadata: { n } }))
    const sync = [await create('py_claims_sync', { metadata: { n: 10 } }), await create('py_claims_sync', { metadata: { n: 11 } })]
    const run = scenario('claims', 'py_claims')
    await run.next((l) => l.ready, 'ready')
    await waitFor(
      async () => (await Promise.all([...made, ...sync].map((p) => rest.get(p.id)))).every((p) => p.status !== 'pending' && p.status !== 'running'),
      10_000,
      'all 8 finished',
    )
    const states = await Promise.all(made.map((p) => rest.get(p.id)))
    expect(states[0]).toMatchObject({ status: 'completed', progress: 100, result_summary: { n: 0, attempt: 1 } })
    expect(states[1]).toMatchObject({ status: 'failed', error: 'row 3 is unreadable' })
    expect(states[2]).toMatchObject({ status: 'waiting_review', result_summary: { drafts: 4 } })
    for (const n of [3, 4, 5]) expect(states[n]).toMatchObject({ status: 'completed', result_summary: { n } })
    for (const p of sync) expect(await rest.get(p.id)).toMatchObject({ status: 'completed', result_summary: { sync: true } })
    // Each process was claimed once, by one worker: one `claimed` event each.
    await run.next((l) => l.event === 'completed' && l.id === made[5].id, 'the last completed event')
    const claimed = run.lines.filter((l) => l.event === 'claimed').map((l) => l.id)
    expect(claimed.sort((a, b) => a - b)).toEqual([...made, ...sync].map((p) => p.id))
    run.send('close')
    await run.next((l) => l.closed, 'closed')
    await endsCleanly(run)
  }, 20_000)

  it('shows each awaited progress on the SSE stream, then done', async () => {
    const p = await create('py_progress')
    const stream = openStream(`${server.url}/processes/${p.id}/stream`, tenant.token)
    const run = scenario('progress', 'py_progress')
    await waitFor(() => stream.done.length === 1, 10_000, 'done on the stream')
    const running = stream.messages.map((m) => m.data).filter((d) => d.status === 'running')
    // Every value the worker sent was accepted and reached the stream (none coalesced at this pace).
    expect(running.map((d) => d.progress).filter((x) => x > 0)).toEqual([10, 30, 50, 70, 90])
    expect(running.at(-1).message).toBe('step 5')
    expect(stream.done[0]!.data).toMatchObject({ status: 'completed', progress: 100, result_summary: { steps: 5 } })
    expect(run.lines.filter((l) => 'accepted' in l).every((l) => l.accepted === true)).toBe(true)
    run.send('close')
    await endsCleanly(run)
  }, 20_000)

  it("a user's cancel sets ctx.cancelled and cancels the handler's task; nothing is sent for it", async () => {
    const p = await create('py_cancel')
    const run = scenario('cancel', 'py_cancel')
    await run.next((l) => l.running === p.id, 'the handler running')
    const response = await fetch(`${server.url}/processes/${p.id}/cancel`, { method: 'POST', headers: rest.auth })
    expect(response.status).toBe(200)
    const seen = await run.next((l) => l.handler_cancelled, 'the handler cancelled', 5000)
    expect(seen).toMatchObject({ event_set: true, reason: 'cancelled' })
    await run.next((l) => l.event === 'cancelled' && l.id === p.id, 'the cancelled event')
    run.send('close')
    await endsCleanly(run)
    expect(await rest.get(p.id)).toMatchObject({ status: 'cancelled', result_summary: null })
    expect(run.lines.some((l) => l.event === 'completed' || l.event === 'failed')).toBe(false)
  }, 20_000)

  it('after a lease time-out, attempt 1 is lost and its late frame refused; attempt 2 completes', async () => {
    const p = await create('py_fence', { max_attempts: 2 })
    const run = scenario('fence', 'py_fence')
    await run.next((l) => l.silent, 'attempt 1 going silent')
    // JOB_TIMEOUT_MS 1.5 s: the sweep puts it back to pending (attempts left) and tells the worker.
    const lost = await run.next((l) => l.event === 'lost' && l.id === p.id, 'attempt 1 lost', 8000)
    expect(lost.attempt).toBe(1)
    await run.next((l) => l.event === 'completed' && l.id === p.id, 'attempt 2 completed', 8000)
    const late = await run.next((l) => 'late' in l, 'the late frame answered')
    expect(late.late).toBe('not_owner')
    await endsCleanly(run)
    expect(await rest.get(p.id)).toMatchObject({ status: 'completed', attempts: 2, result_summary: { attempt: 2 } })
  }, 20_000)

  it('stops with WorkerAuthError when the server refuses the token', async () => {
    const run = scenario('refused', 'py_refused')
    const line = await run.next((l) => 'refused' in l, 'the refusal')
    expect(line).toMatchObject({ refused: true, status: 401, code: 'unauthenticated' })
    await endsCleanly(run)
  }, 15_000)

  it('stops, and wait() raises WorkerAuthError, when its token is revoked while it is connected', async () => {
    const { id, token } = await createWorkerToken(db.sql, 'to be revoked')
    const run = runScenario('revoked', { ...env('py_revoked'), WORKER_TOKEN: token })
    runs.push(run)
    await run.next((l) => l.event === 'connected', 'connected')
    await revokeToken(db.sql, id, 'worker')
    const stopped = await run.next((l) => 'stopped' in l, 'stopped', 8000)
    expect(stopped).toMatchObject({ stopped: 'refused', status: 401, code: 'unauthenticated' })
    // Closed by the server (1008: policy), then refused at a next upgrade (one reconnect may still get in while
    // the server's AUTH_CACHE_MS holds the token) — and no attempt after the refusal.
    expect(run.lines.find((l) => l.event === 'disconnected')?.close_code).toBe(1008)
    const events = run.lines.filter((l) => l.event).map((l) => l.event)
    expect(events.at(-1)).toBe('stopped')
    expect(events.filter((e) => e === 'stopped')).toHaveLength(1)
    await endsCleanly(run)
  }, 15_000)

  it('the demo worker twin imports a CSV with progress, asks review for locations, and stops on SIGTERM', async () => {
    const csv = await create('csv_import', { metadata: { rows: 12 } })
    const locations = await create('ai_location_import', { metadata: { locations: 4 } })
    const proc = Bun.spawn([PYTHON!, 'sdk/python/examples/demo_worker.py'], {
      cwd: ROOT,
      env: { ...process.env, PROCESSES_URL: server.url, WORKER_TOKEN: wtoken, PYTHONPATH: '' },
      stdout: 'pipe',
      stderr: 'pipe',
    })
    runs.push({ kill: () => proc.kill('SIGKILL') })
    const output = collectOutput(proc)
    await waitFor(
      async () => (await rest.get(csv.id)).status === 'completed' && (await rest.get(locations.id)).status === 'waiting_review',
      10_000,
      () => `the demo's two jobs done:\n${output()}`,
    )
    expect(await rest.get(csv.id)).toMatchObject({ progress: 100, result_summary: { rows_imported: 12, rows_skipped: 0 } })
    expect(await rest.get(locations.id)).toMatchObject({ result_summary: { locations_matched: 4, locations_unmatched: 0 } })
    expect(output()).toContain(`#${csv.id} 100% Imported 12/12 rows`)
    proc.kill('SIGTERM')
    expect(await proc.exited).toBe(0)
  }, 20_000)

  it("the README's CSV example imports a file with live progress on the stream", async () => {
    const readme = await Bun.file(`${ROOT}README.md`).text()
    const section = readme.slice(readme.indexOf('## Python worker SDK'))
    const example = section.slice(section.indexOf('```python\n') + 10, section.indexOf('\n```', section.indexOf('```python')))
    expect(example.split('\n').filter((line) => line.trim()).length).toBeLessThanOrEqual(15)
    const dir = mkdtempSync(join(tmpdir(), 'py-readme-'))
    writeFileSync(join(dir, 'example.py'), example)
    writeFileSync(join(dir, 'people.csv'), `email,name\n${Array.from({ length: 250 }, (_, i) => `p${i}@example.com,P ${i}`).join('\n')}\n`)
    const p = await create('csv_import', { metadata: { path: join(dir, 'people.csv') } })
    const stream = openStream(`${server.url}/processes/${p.id}/stream`, tenant.token)
    const proc = Bun.spawn([PYTHON!, join(dir, 'example.py')], {
      env: { ...process.env, PROCESSES_URL: server.url, WORKER_TOKEN: wtoken, PYTHONPATH: `${ROOT}sdk/python` },
      stdout: 'pipe',
      stderr: 'pipe',
    })
    runs.push({ kill: () => proc.kill('SIGKILL') })
    const output = collectOutput(proc)
    await waitFor(
      () => stream.done.length === 1,
      10_000,
      () => `done on the stream; the example printed:\n${output()}`,
    )
    const messages = stream.messages.map((m) => m.data.message)
    expect(messages).toContain('Imported 200/250 rows')
    expect(stream.done[0]!.data).toMatchObject({ status: 'completed', result_summary: { rows_imported: 250 } })
    proc.kill('SIGTERM')
    await proc.exited
    rmSync(dir, { recursive: true, force: true })
  }, 20_000)

  // ctx.output / ctx.update need a server with those ops (live output): accepted there, refused here before.
  it('ctx.output and ctx.update go out on the same send path: accepted by a server that has them, refused by one that has not', async () => {
    const hasOps = (OPS as readonly string[]).includes('output') && (OPS as readonly string[]).includes('update')
    const p = await create('py_output')
    const run = scenario('output', 'py_output')
    const sent = await run.next((l) => 'output' in l, 'output and update answered')
    expect(sent).toEqual({ output: hasOps, update: hasOps })
    await run.next((l) => l.event === 'completed' && l.id === p.id, 'completed')
    run.send('close')
    const errors = await run.next((l) => 'errors' in l, 'the errors reported')
    expect(errors.errors).toEqual(hasOps ? [] : ['invalid_message', 'invalid_message'])
    await endsCleanly(run)
  }, 15_000)
})

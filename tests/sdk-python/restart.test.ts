// The Python worker across a server restart (SIGTERM closes worker sockets with 1012): it reconnects with
// the same worker id, keeps its lease, and re-sends the `complete` it made while the server was down.
import { afterAll, describe, expect, it } from 'bun:test'
import { restAs, seededDatabase, spawnServer, waitFor } from '../support/helpers'
import { endsCleanly, PYTHON, runScenario } from './python'

describe.skipIf(!PYTHON)('the Python worker across a server restart', async () => {
  const { url, tenant, wtoken } = await seededDatabase()
  const env = { DATABASE_URL: url, REDIS_URL: undefined, PROGRESS_PERSIST_MS: '20' }
  let server = await spawnServer(env)
  const rest = () => restAs(server.url, tenant.token)
  const runs: { kill(): void }[] = []
  afterAll(() => {
    for (const run of runs) run.kill()
  })

  it('reconnects with the same worker id, keeps the lease, and completes with the frame made while it was down', async () => {
    const p = await rest().create('py_restart')
    const run = runScenario('restart', { PROCESSES_URL: server.url, WORKER_TOKEN: wtoken, TYPE: 'py_restart', WORKER_ID: 'py-restart-1' })
    runs.push(run)
    await run.next((l) => l.waiting === p.id, 'the handler waiting', 15_000)
    expect(await rest().get(p.id)).toMatchObject({ status: 'running', worker_id: 'py-restart-1', attempts: 1 })

    expect(await server.kill('SIGTERM')).toBe(0)
    const disconnect = await run.next((l) => l.event === 'disconnected', 'the disconnect')
    expect(disconnect.close_code).toBe(1012) // "service restart": reconnect soon, no backoff growth
    run.send('finish') // the handler returns while the server is down: its complete waits for the next hello
    const whileDown = await run.next((l) => 'progress_while_down' in l, 'the progress while down')
    expect(whileDown.progress_while_down).toBe(false) // live state is dropped, not queued

    server = await spawnServer(env, { port: server.port })
    const done = await run.next((l) => l.event === 'completed' && l.id === p.id, 'completed after the restart', 15_000)
    expect(done.attempt).toBe(1)
    await waitFor(async () => (await rest().get(p.id)).status === 'completed', 5000, 'completed')
    expect(await rest().get(p.id)).toMatchObject({ status: 'completed', attempts: 1, result_summary: { survived: true }, progress: 100 })
    expect(run.lines.filter((l) => l.event === 'connected')).toHaveLength(2)
    run.send('close')
    await endsCleanly(run)
  }, 40_000)
})

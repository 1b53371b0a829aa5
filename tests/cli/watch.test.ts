// `cli watch ID` against a real listening server, as a child process: a progress bar on stderr (cli-progress in
// a terminal, given one by `script`; lines otherwise) fed by the SSE stream while a real worker reports, one JSON
// object on stdout at the end, and the exit code by the final status.
import { describe, expect, it } from 'bun:test'
import { streamStats } from '../../src/processes/sse-session'
import { BUN, collectOutput, createTenant, listeningServer, restAs, testDatabase, waitFor, workerToken } from '../support/helpers'
import { TestWorker } from '../support/worker-client'

const { db } = await testDatabase()
const server = await listeningServer({ PROGRESS_PERSIST_MS: '20' }, db)
const tenant = await createTenant(db.sql)
const rest = restAs(server.url, tenant.token)
const worker = await TestWorker.connect(server.url, await workerToken(db.sql))

/** The CLI watching `id`, started before the worker reports; its output read as it comes. */
function watch(id: number, env: Record<string, string> = {}, args: string[] = ['--url', server.url]) {
  streamsBefore = streamStats.opened
  const proc = Bun.spawn([BUN, 'src/cli.ts', 'watch', String(id), ...args], {
    cwd: `${import.meta.dir}/../..`,
    env: { PATH: process.env.PATH!, HOME: process.env.HOME!, PROCESSES_TOKEN: tenant.token, ...env },
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const stdout = new Response(proc.stdout).text()
  const stderr = new Response(proc.stderr).text()
  return { proc, result: async () => ({ code: await proc.exited, stdout: await stdout, stderr: await stderr }) }
}

let streamsBefore = 0

/** Once the watcher's stream is open: claims `id`, reports 50 %, then ends it as `end` says. */
async function runJob(id: number, end: 'complete' | 'fail') {
  await waitFor(() => streamStats.opened > streamsBefore, 10_000, "the watcher's stream")
  const claimed = (await worker.request({ op: 'claim', types: ['watched'] })).process
  expect(claimed.id).toBe(id)
  expect((await worker.request({ op: 'progress', process_id: id, attempt: claimed.attempts, progress: 50, message: 'Half way' })).op).toBe('ack')
  // The watcher has seen 50 % before the end (each state is a line of its own when stderr is not a terminal).
  await waitFor(async () => (await rest.get(id)).progress === 50, 5000, 'progress 50')
  await Bun.sleep(300)
  const frame = end === 'complete' ? { op: 'complete', result_summary: { rows: 3 } } : { op: 'fail', error: 'Row 7: unreadable' }
  expect((await worker.request({ ...frame, process_id: id, attempt: claimed.attempts })).op).toBe('ack')
}

describe('cli watch', () => {
  it('follows a process to completed: a line per change on stderr, the final process on stdout, exit 0', async () => {
    const p = await rest.create('watched')
    const watcher = watch(p.id)
    await runJob(p.id, 'complete')
    const { code, stdout, stderr } = await watcher.result()
    expect(code).toBe(0)
    expect(stdout.trimEnd().split('\n')).toHaveLength(1)
    expect(JSON.parse(stdout)).toMatchObject({ id: p.id, status: 'completed', progress: 100, result_summary: { rows: 3 } })
    expect(stderr).toContain(`#${p.id} running 50% Half way`)
    expect(stderr.trimEnd().split('\n').at(-1)).toStartWith(`#${p.id} completed 100%`)
  }, 30_000)

  it('exits 1 when the process fails, with the failed process on stdout', async () => {
    const p = await rest.create('watched')
    const watcher = watch(p.id)
    await runJob(p.id, 'fail')
    const { code, stdout } = await watcher.result()
    expect(code).toBe(1)
    expect(JSON.parse(stdout)).toMatchObject({ id: p.id, status: 'failed', error: 'Row 7: unreadable' })
  }, 30_000)

  it('draws a cli-progress bar in a terminal', async () => {
    const p = await rest.create('watched')
    // `script` gives the CLI a pseudo-terminal, as a user's shell would.
    const command = `${BUN} src/cli.ts watch ${p.id} --url ${server.url} --token ${tenant.token}`
    const proc = Bun.spawn(['script', '-qfec', command, '/dev/null'], { cwd: `${import.meta.dir}/../..`, stdout: 'pipe', stderr: 'pipe', stdin: 'ignore' })
    streamsBefore = streamStats.opened
    const output = collectOutput(proc)
    await runJob(p.id, 'complete')
    expect(await proc.exited).toBe(0)
    const screen = output()
    expect(screen).toContain(`#${p.id} [${'█'.repeat(20)}${'░'.repeat(20)}] 50% | running | Half way`)
    expect(screen).toContain(`#${p.id} [${'█'.repeat(40)}] 100% | completed`)
  }, 30_000)

  it('says what is wrong, exit 1 and nothing on stdout: an unknown process, a refused token, no token', async () => {
    const unknown = await watch(987_654).result()
    expect(unknown).toMatchObject({ code: 1, stdout: '' })
    expect(unknown.stderr).toContain(`error: ${server.url}/processes/987654: 404 not_found`)
    const refused = await watch(1, { PROCESSES_TOKEN: 'ps_nope' }).result()
    expect(refused).toMatchObject({ code: 1, stdout: '' })
    expect(refused.stderr).toContain('401 unauthenticated')
    const none = await watch(1, { PROCESSES_TOKEN: '' }).result()
    expect(none).toEqual({ code: 1, stdout: '', stderr: 'error: watch needs an API token: --token T, or PROCESSES_TOKEN in the environment\n' })
  }, 30_000)
})

// The first five minutes: a busy port is refused, the start banner's commands work as printed, the CLI
// works through `npm run` and beside a running embedded server, and failures say what is wrong. Every server
// here is a real child process (`bun src/main.ts`); the CLI runs as `bun src/cli.ts` and through real npm.
import { afterAll, describe, expect, it } from 'bun:test'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { listenHost, loadConfig, urlHost } from '../../src/config'
import { PortInUseError, startServer } from '../../src/server'
import { BUN, freePort, freshDatabaseUrl, hasPostgres, quietLogger, type Run, runToEnd, spawnServer, testConfig, waitFor } from '../support/helpers'
import { TestWorker } from '../support/worker-client'

const tmp = mkdtempSync(join(tmpdir(), 'ps-first-run-'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))
let dirs = 0
const dataDir = () => join(tmp, `data-${++dirs}`)

const run = runToEnd
const main = (env: Record<string, string | undefined>, ...args: string[]) => run([BUN, 'src/main.ts', ...args], { LOG_LEVEL: 'info', ...env })
const cli = (env: Record<string, string | undefined>, ...args: string[]) => run([BUN, 'src/cli.ts', ...args], env)
/** `npm run --silent cli <args>`: npm as a user runs it, with node_modules/.bin (bun) put on PATH by npm. */
const npmCli = (env: Record<string, string | undefined>, ...args: string[]) => run(['npm', 'run', '--silent', 'cli', ...args], env)

function json(r: Run): any {
  expect({ code: r.code, stderr: r.stderr.replace(/^npm warn .*\n/gm, '') }).toEqual({ code: 0, stderr: '' })
  expect(r.stdout.trimEnd().split('\n')).toHaveLength(1)
  return JSON.parse(r.stdout)
}

describe('a running embedded server', async () => {
  const dir = dataDir()
  const port = await freePort()
  const server = await spawnServer({ DATABASE_URL: '', REDIS_URL: '', DATA_DIR: dir, LOG_LEVEL: 'info' }, { port })
  const env = { DATA_DIR: dir }

  it('prints a banner whose commands work as printed on a port other than 3000', async () => {
    await waitFor(() => server.output().includes('"msg":"listening"'), 30_000, 'the listening line')
    const out = server.output()
    expect(out).toContain('Embedded database created with a demo workspace')
    const worker = /^ {2}(PROCESSES_URL=\S+) WORKER_TOKEN=(psw_\S+) npm run worker:demo$/m.exec(out)
    expect(worker?.[1]).toBe(`PROCESSES_URL=http://localhost:${port}`)
    expect(out).not.toContain('bun run')
    expect(out).not.toMatch(/^ +open /m) // macOS-only
    expect(out).toContain(`  dashboard: http://localhost:${port}/ (in a browser; paste the API token)`)
    expect(out).toContain(`curl -s http://localhost:${port}/processes`)
    // How to get new tokens later, in the form that works with npm.
    expect(out).toContain('npm run cli -- create-token --user 1')
    expect(out).toContain('npm run cli -- create-worker-token --workspace 1')
    // The printed worker token works.
    const w = await TestWorker.connect(server.url, worker![2]!)
    w.close()
  })

  it('runs the CLI while the server holds the database: a new API token authenticates against that server', async () => {
    const created = json(await cli(env, 'create-token', '--user', '1', '--name', 'recovered'))
    expect(Object.keys(created).sort()).toEqual(['id', 'token'])
    const me = await fetch(`${server.url}/me`, { headers: { authorization: `Bearer ${created.token}` } })
    expect(me.status).toBe(200)
    expect(((await me.json()) as any).user.email).toBe('demo@example.com')
  })

  it('mints a worker token the same way, which connects to that server', async () => {
    const created = json(await cli(env, 'create-worker-token', '--name', 'recovered worker', '--workspace', '1'))
    const w = await TestWorker.connect(server.url, created.token)
    w.close()
  })

  it("reports the server's refusal as the CLI's own error, exit 1 and nothing on stdout", async () => {
    const r = await cli(env, 'create-token', '--user', '999')
    expect(r).toEqual({ code: 1, stdout: '', stderr: 'error: referenced user or workspace does not exist\n' })
    // Usage errors are still found by the CLI itself.
    expect((await cli(env, 'create-token', '--user', 'x')).stderr).toMatch(/--user must be a positive integer/)
  })

  it('lists what exists through the running server: workspaces, users, tokens, worker tokens (no secrets)', async () => {
    const listed = await Promise.all(['list-workspaces', 'list-users', 'list-tokens', 'list-worker-tokens'].map((command) => cli(env, command)))
    const [workspaces, users, tokens, workers] = listed.map(json)
    expect(workspaces.workspaces[0]).toMatchObject({ id: 1, name: 'Demo', members: 1 })
    expect(users.users[0]).toMatchObject({ id: 1, email: 'demo@example.com', workspaces: [{ id: 1, role: 'owner' }] })
    expect(tokens.tokens[0]).toMatchObject({ id: 1, user_id: 1, name: 'demo', revoked_at: null })
    expect(workers.worker_tokens[0]).toMatchObject({ id: 1, name: 'demo worker', workspace_ids: [1], types: null })
    for (const run of listed) expect(run.stdout).not.toMatch(/ps[ws]?_[\w-]{20,}|hash/)
  })

  it('listens on the loopback only by default (HOST), so the embedded demo is not on the network', async () => {
    const line = JSON.parse(
      server
        .output()
        .split('\n')
        .find((l) => l.includes('"msg":"listening"'))!,
    )
    expect(line.host).toBe('127.0.0.1')
    expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200)
    // Another loopback address reaches a server bound to every interface, not one bound to 127.0.0.1.
    await expect(fetch(`http://127.0.0.2:${port}/health`)).rejects.toThrow()
  })

  it('keeps the admin channel to its owner: a unix socket with mode 0600 inside DATA_DIR', () => {
    const stat = statSync(join(dir, 'admin.sock'))
    expect(stat.isSocket()).toBe(true)
    expect(stat.mode & 0o777).toBe(0o600)
  })

  it('answers only the CLI commands on the admin channel', async () => {
    const ask = (body: unknown) => fetch('http://localhost/', { unix: join(dir, 'admin.sock'), method: 'POST', body: JSON.stringify(body) } as RequestInit)
    const bad = await ask({ argv: ['drop-everything'] })
    expect(bad.status).toBe(400)
    expect(((await bad.json()) as any).error).toMatch(/unknown command/)
    expect((await ask({ sql: 'select 1' })).status).toBe(400)
    expect((await fetch('http://localhost/anything', { unix: join(dir, 'admin.sock') } as RequestInit)).status).toBe(404)
  })

  it('takes the flags npm swallows: `npm run cli create-token --user 1` without `--`', async () => {
    const created = json(await npmCli(env, 'create-token', '--user', '1'))
    expect((await fetch(`${server.url}/me`, { headers: { authorization: `Bearer ${created.token}` } })).status).toBe(200)
    // `--name x` npm keeps as a string of its own; `--id N --worker` as `true` plus a bare `N`.
    const worker = json(await npmCli(env, 'create-worker-token', '--name', 'via npm', '--all-workspaces'))
    expect(json(await npmCli(env, 'revoke-token', '--id', String(worker.id), '--worker'))).toEqual({ id: worker.id, revoked: true })
    // And the documented form, with `--`.
    expect(Object.keys(json(await npmCli(env, '--', 'create-token', '--user', '1', '--ttl-days', '2'))).sort()).toEqual(['id', 'token'])
  }, 120_000)

  it('refuses what npm made ambiguous, saying to use `--`', async () => {
    // Two flags lost their values to npm (`1` and `2` are left bare): which is which cannot be known.
    const r = await npmCli(env, 'create-token', '--user', '1', '--ttl-days', '2')
    expect(r.code).toBe(1)
    expect(r.stdout).toBe('')
    expect(r.stderr).toContain('npm run cli -- create-token')
  })

  it('refuses a second server on the same port: exit 1 with a message naming the port', async () => {
    const second = await main({ DATABASE_URL: '', REDIS_URL: '', DATA_DIR: dataDir(), PORT: String(port) })
    expect(second.code).toBe(1)
    expect(second.stderr).toContain(`port ${port} is already in use`)
    // The first one still answers every request (nothing was split off to the second).
    for (let i = 0; i < 20; i++) expect((await fetch(`${server.url}/health`)).status).toBe(200)
  })

  it('refuses the busy port in startServer itself too (no SO_REUSEPORT), releasing what it opened', async () => {
    const attempt = startServer(testConfig({ PORT: String(port) }), { log: quietLogger() })
    await expect(attempt).rejects.toBeInstanceOf(PortInUseError)
    await expect(attempt).rejects.toThrow(`port ${port} is already in use`)
  })

  it('healthcheck exits 0 when the server answers', async () => {
    expect((await main({ PORT: String(port) }, 'healthcheck')).code).toBe(0)
  })
})

describe.skipIf(!hasPostgres)('a second server on a busy port (Postgres)', () => {
  it('exits non-zero naming the port instead of sharing it', async () => {
    const port = await freePort()
    // A database of its own: the server migrates it (never the shared one DATABASE_URL names).
    const url = await freshDatabaseUrl()
    const first = await spawnServer({ DATABASE_URL: url, REDIS_URL: '' }, { port })
    const second = await main({ DATABASE_URL: url, REDIS_URL: '', PORT: String(port) })
    expect(second.code).toBe(1)
    expect(second.stderr).toContain(`port ${port} is already in use`)
    expect((await fetch(`${first.url}/health`)).status).toBe(200)
    // With DATABASE_URL (a deployment) HOST defaults to every interface.
    expect((await fetch(`http://127.0.0.2:${port}/health`)).status).toBe(200)
  })
})

describe('errors that say what is wrong', () => {
  it('healthcheck prints why it failed and exits 1', async () => {
    const port = await freePort()
    const r = await main({ PORT: String(port) }, 'healthcheck')
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`unhealthy: GET http://127.0.0.1:${port}/health failed: connection refused`)
    expect(r.stderr).toContain(`PORT=${port}`)
  })

  it('names each bad variable and the values it takes', async () => {
    const r = await main({ LOG_LEVEL: 'verbose', PORT: 'abc' })
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('PORT: Expected integer (got "abc")')
    expect(r.stderr).toContain('LOG_LEVEL: Expected one of debug, info, warn, error, silent (got "verbose")')
  })

  it('names DATABASE_URL when it is not a URL or not a postgres one', async () => {
    const bad = await main({ DATABASE_URL: 'localhost:5432', PORT: '0' })
    expect(bad.code).toBe(1)
    expect(bad.stderr).toContain('DATABASE_URL')
    const mysql = await cli({ DATABASE_URL: 'mysql://root@127.0.0.1/db' }, 'create-workspace', '--name', 'x')
    expect(mysql).toEqual({ code: 1, stdout: '', stderr: 'error: DATABASE_URL must start with postgres:// or postgresql:// (got "mysql")\n' })
  })

  it('names DATABASE_URL (without its password) when the connection is refused', async () => {
    const port = await freePort()
    const r = await main({ DATABASE_URL: `postgres://app:s3cret@127.0.0.1:${port}/app`, PORT: '0' })
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`DATABASE_URL postgres://app:***@127.0.0.1:${port}/app: connection refused`)
    expect(r.stderr + r.stdout).not.toContain('s3cret')
  })

  it.skipIf(!hasPostgres)('names DATABASE_URL for a missing database and for a failed authentication', async () => {
    const base = new URL(process.env.DATABASE_URL!)
    const missing = new URL(base)
    missing.pathname = '/ps_no_such_database'
    const r = await main({ DATABASE_URL: missing.toString(), PORT: '0' })
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/DATABASE_URL \S+: that database does not exist/)
    const stranger = new URL(base)
    stranger.username = 'ps_no_such_role'
    const auth = await cli({ DATABASE_URL: stranger.toString() }, 'create-workspace', '--name', 'x')
    expect(auth.code).toBe(1)
    expect(auth.stderr).toMatch(/^error: DATABASE_URL \S+: authentication failed/)
  })

  it('says "degraded" at start when Redis is not reachable, not "on"', async () => {
    const redisPort = await freePort()
    // Postgres where there is one: an embedded first start (PGlite's initdb) can take most of a minute on a loaded machine.
    const database = hasPostgres ? { DATABASE_URL: await freshDatabaseUrl() } : { DATABASE_URL: '', DATA_DIR: dataDir() }
    const server = await spawnServer({ ...database, REDIS_URL: `redis://127.0.0.1:${redisPort}`, LOG_LEVEL: 'info' })
    await waitFor(() => server.output().includes('"msg":"listening"'), 30_000, 'the listening line')
    const line = server
      .output()
      .split('\n')
      .find((l) => l.includes('"msg":"listening"'))!
    expect(JSON.parse(line).redis).toStartWith('degraded')
  })

  it('prints usage and exits 0 for --help (server and CLI)', async () => {
    for (const args of [['--help'], ['-h']]) {
      const r = await main({}, ...args)
      expect(r.code).toBe(0)
      expect(r.stdout).toContain('usage: processes-server')
      expect(r.stdout).toContain('healthcheck')
    }
    for (const args of [['--help'], ['create-token', '--help']]) {
      const r = await cli({}, ...args)
      expect(r.code).toBe(0)
      expect(r.stdout).toContain('create-token --user ID')
    }
    const viaMain = await main({}, 'create-token', '--help')
    expect(viaMain.code).toBe(0)
    expect(viaMain.stdout).toContain('usage: cli')
  })
})

describe('HOST', () => {
  it('defaults to the loopback for the embedded database and to every interface with DATABASE_URL; HOST wins', () => {
    expect(listenHost(loadConfig({}))).toBe('127.0.0.1')
    expect(listenHost(loadConfig({ DATABASE_URL: 'postgres://db/app' }))).toBe('0.0.0.0')
    expect(listenHost(loadConfig({ HOST: '0.0.0.0' }))).toBe('0.0.0.0')
    expect(listenHost(loadConfig({ HOST: '127.0.0.1', DATABASE_URL: 'postgres://db/app' }))).toBe('127.0.0.1')
    // What healthcheck and the server's own URL connect to.
    expect([urlHost('0.0.0.0'), urlHost('::'), urlHost('::1'), urlHost('10.1.2.3')]).toEqual(['127.0.0.1', '127.0.0.1', '[::1]', '10.1.2.3'])
  })
})

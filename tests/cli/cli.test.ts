// The admin CLI (README: Admin CLI) as a child process: one JSON object on stdout per command, errors on stderr with exit 1,
// on an embedded DATA_DIR (always) and on a fresh Postgres database (with DATABASE_URL); the tokens it
// prints work against the API.
import { afterAll, describe, expect, it } from 'bun:test'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildServices } from '../../src/server'
import { createHandler } from '../../src/app'
import { openDatabase } from '../../src/db/client'
import { MIGRATIONS } from '../../src/db/migrations'
import { BUN, freshDatabaseUrl, hasPostgres, quietLogger, requester, type Run, runToEnd, testConfig } from '../support/helpers'

const cli = (env: Record<string, string>, ...args: string[]): Promise<Run> => runToEnd([BUN, 'src/cli.ts', ...args], env)

/** Exit 0 and exactly one JSON object on one stdout line, with exactly these keys. */
function expectOutput(run: Run, keys: string[]): Record<string, any> {
  expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' })
  expect(run.stdout.endsWith('\n')).toBe(true)
  expect(run.stdout.trimEnd().split('\n')).toHaveLength(1)
  const value = JSON.parse(run.stdout)
  expect(typeof value === 'object' && value !== null && !Array.isArray(value)).toBe(true)
  expect(Object.keys(value).sort()).toEqual([...keys].sort())
  return value
}

/** Exit 1, nothing on stdout, the reason on stderr. */
function expectFailure(run: Run, reason: RegExp) {
  expect(run.code).toBe(1)
  expect(run.stdout).toBe('')
  expect(run.stderr).toMatch(reason)
}

/** Exit 1, nothing on stdout, exactly this message on stderr. */
function expectExactFailure(run: Run, message: string) {
  expect({ code: run.code, stdout: run.stdout, stderr: run.stderr }).toEqual({ code: 1, stdout: '', stderr: `error: ${message}\n` })
}

/** Runs the calls four at a time (each is a child process). */
async function inTurn<T>(calls: Array<() => Promise<T>>): Promise<T[]> {
  const results: T[] = new Array(calls.length)
  let next = 0
  const lane = async () => {
    while (next < calls.length) {
      const at = next++
      results[at] = await calls[at]!()
    }
  }
  await Promise.all([lane(), lane(), lane(), lane()])
  return results
}

const dataDir = mkdtempSync(join(tmpdir(), 'ps-cli-'))
afterAll(() => rmSync(dataDir, { recursive: true, force: true }))
const postgresUrl = hasPostgres ? await freshDatabaseUrl() : null

const backends: Array<{ name: string; env: Record<string, string>; skip: boolean }> = [
  { name: 'an embedded DATA_DIR', env: { DATA_DIR: join(dataDir, 'data') }, skip: false },
  { name: 'a fresh Postgres database', env: { DATABASE_URL: postgresUrl ?? '' }, skip: !hasPostgres },
]

// Usage errors are found before any database is opened, so these need no backend at all.
describe('usage errors', () => {
  // A DATA_DIR that cannot be created: a command that got as far as opening it would fail differently.
  const run = (...args: string[]) => cli({ DATA_DIR: '/proc/no-such-dir/data' }, ...args)

  it('fails with exit 1 and nothing on stdout for an unknown command, or none', async () => {
    expectFailure(await run('drop-everything'), /unknown command "drop-everything"/)
    expectFailure(await run(), /usage/)
  })

  it('fails with exit 1 for an unknown option', async () => {
    expectFailure(await run('create-workspace', '--name', 'x', '--bogus', 'y'), /bogus/)
  })

  it('fails with exit 1 for a missing option', async () => {
    expectFailure(await run('create-workspace'), /--name is required/)
    expectFailure(await run('create-user', '--workspace', '1'), /--email is required/)
    expectFailure(await run('create-user', '--email', 'a@example.com'), /--workspace is required/)
    expectFailure(await run('add-member', '--user', '1'), /--workspace is required/)
    expectFailure(await run('create-token'), /--user is required/)
    expectFailure(await run('revoke-token'), /--id is required/)
  })

  it('fails with exit 1 for a bad id, email or ttl', async () => {
    expectFailure(await run('create-token', '--user', 'abc'), /--user must be a positive integer/)
    expectFailure(await run('revoke-token', '--id', '0'), /--id must be a positive integer/)
    expectFailure(await run('add-member', '--user', '1', '--workspace', '1.5'), /--workspace must be a positive integer/)
    expectFailure(await run('create-user', '--email', 'not-an-email', '--workspace', '1'), /--email must be an email address/)
    expectFailure(await run('create-token', '--user', '1', '--ttl-days', 'soon'), /--ttl-days must be a positive number/)
  })

  it('fails with exit 1 and a clear message for a --ttl-days that is not a sane number of days', async () => {
    // 1e9 days used to pass the check and fail later as "error: Invalid Date".
    const bad = ['1e9', '36501', '1e3', '0', '0.0', '-1', '-0.5', 'Infinity', 'NaN', '0x10', ' 5', '5 days', '']
    const runs = await inTurn(bad.map((ttl) => () => run('create-token', '--user', '1', '--ttl-days', ttl)))
    for (const [i, r] of runs.entries()) expectExactFailure(r, `--ttl-days must be a positive number of days, at most 36500 (got ${JSON.stringify(bad[i])})`)
  })

  it('fails with exit 1 and a clear message for an id flag that is not a positive integer', async () => {
    const bad = ['abc', '1e3', '-1', '-0', '0', '1.5', '0x10', '+5', '12345678901234567890', ' 7']
    const cases = [
      ...bad.map((value) => ({ flag: 'user', value, args: ['create-token', '--user', value] })),
      ...['abc', '1e3', '-1'].flatMap((value) => [
        { flag: 'user', value, args: ['add-member', '--workspace', '1', '--user', value] },
        { flag: 'workspace', value, args: ['add-member', '--user', '1', '--workspace', value] },
        { flag: 'workspace', value, args: ['create-user', '--email', 'a@example.com', '--workspace', value] },
        { flag: 'id', value, args: ['revoke-token', '--id', value] },
      ]),
    ]
    const runs = await inTurn(cases.map((c) => () => run(...c.args)))
    for (const [i, r] of runs.entries()) expectExactFailure(r, `--${cases[i]!.flag} must be a positive integer id (got ${JSON.stringify(cases[i]!.value)})`)
  })

  it('fails with exit 1 and a clear message for a flag with no value', async () => {
    expectExactFailure(await run('create-token', '--user'), '--user needs a value')
    expectExactFailure(await run('create-token', '--user', '--name', 'x'), '--user needs a value')
    expectExactFailure(await run('create-token', '--user', '1', '--ttl-days'), '--ttl-days needs a value')
  })
})

for (const backend of backends) {
  describe.skipIf(backend.skip)(`on ${backend.name}`, () => {
    const run = (...args: string[]) => cli(backend.env, ...args)
    const email = `admin-${Date.now()}@example.com`
    const made: {
      workspace?: number
      user?: number
      token?: string
      tokenId?: number
      revoked?: string
      revokedId?: number
      revokedWorker?: string
      revokedWorkerId?: number
    } = {}

    it('migrates: the first run applies every migration', async () => {
      expect(expectOutput(await run('migrate'), ['applied']).applied).toEqual(MIGRATIONS.map((m) => m.name))
    })

    it('creates a workspace', async () => {
      const out = expectOutput(await run('create-workspace', '--name', 'Acme Imports'), ['id', 'name'])
      expect(out.name).toBe('Acme Imports')
      expect(typeof out.id).toBe('number')
      made.workspace = out.id
    })

    it('creates a user in a workspace', async () => {
      const out = expectOutput(await run('create-user', '--email', email, '--workspace', String(made.workspace), '--role', 'owner'), ['id', 'email'])
      expect(out.email).toBe(email)
      expect(typeof out.id).toBe('number')
      made.user = out.id
    })

    it('adds a member, or changes the role of an existing one', async () => {
      const out = expectOutput(await run('add-member', '--user', String(made.user), '--workspace', String(made.workspace), '--role', 'admin'), [
        'user_id',
        'workspace_id',
        'role',
      ])
      expect(out).toEqual({ user_id: made.user, workspace_id: made.workspace, role: 'admin' })
    })

    it('creates API tokens, with and without an expiry', async () => {
      const out = expectOutput(await run('create-token', '--user', String(made.user), '--name', 'laptop'), ['id', 'token'])
      expect(out.token).toMatch(/^ps_[\w-]{20,}$/)
      made.token = out.token
      made.tokenId = out.id
      const expiring = expectOutput(await run('create-token', '--user', String(made.user), '--ttl-days', '1'), ['id', 'token'])
      // The longest and a fractional expiry are fine.
      expectOutput(await run('create-token', '--user', String(made.user), '--ttl-days', '36500'), ['id', 'token'])
      expectOutput(await run('create-token', '--user', String(made.user), '--ttl-days', '0.5'), ['id', 'token'])
      made.revoked = expiring.token
      made.revokedId = expiring.id
      expect(expiring.token).not.toBe(out.token)
    })

    it('creates a worker token', async () => {
      const out = expectOutput(await run('create-worker-token', '--name', 'importer', '--all-workspaces'), ['id', 'token'])
      expect(out.token).toMatch(/^psw_[\w-]{20,}$/)
      made.revokedWorker = out.token
      made.revokedWorkerId = out.id
    })

    it('revokes an API token and a worker token', async () => {
      expect(expectOutput(await run('revoke-token', '--id', String(made.revokedId)), ['id', 'revoked'])).toEqual({ id: made.revokedId, revoked: true })
      expect(expectOutput(await run('revoke-token', '--id', String(made.revokedWorkerId), '--worker'), ['id', 'revoked'])).toEqual({
        id: made.revokedWorkerId,
        revoked: true,
      })
    })

    it('fails with exit 1 and nothing on stdout for an unknown user or token', async () => {
      expectFailure(await run('create-token', '--user', '987654'), /referenced user or workspace does not exist/)
      expectFailure(await run('revoke-token', '--id', '987654'), /no API token with id 987654/)
    })

    it('made tokens that work against the API, and revoked ones that do not', async () => {
      const db = await openDatabase({ url: backend.env.DATABASE_URL || undefined, dataDir: backend.env.DATA_DIR ?? 'memory://', poolMax: 2 })
      try {
        const { services } = await buildServices(testConfig({ AUTH_CACHE_MS: '0' }), { db, log: quietLogger() })
        const request = requester(createHandler(services))
        const me = await request('GET', '/me', { token: made.token })
        expect(me.status).toBe(200)
        expect(me.body.user).toEqual({ id: made.user, email })
        expect(me.body.workspaces).toEqual([{ id: made.workspace, name: 'Acme Imports', role: 'admin' }])

        const created = await request('POST', '/processes', { token: made.token, body: { type: 'cli_check' } })
        expect(created.status).toBe(201)
        expect(created.body.workspace_id).toBe(made.workspace)
        expect((await request('GET', '/processes', { token: made.revoked })).status).toBe(401)

        await expect(services.auth.authenticateWorker(made.revokedWorker!)).rejects.toMatchObject({ status: 401 })
        await services.audit.stop()
      } finally {
        await db.close()
      }
    })

    it('lists what it made: workspaces, users, API tokens and worker tokens, with no secret or hash', async () => {
      // The embedded database takes one process at a time.
      const all = backend.env.DATA_DIR
        ? async <T>(calls: Array<() => Promise<T>>) => {
            const out: T[] = []
            for (const call of calls) out.push(await call())
            return out
          }
        : inTurn
      const [workspaces, users, members, tokens, mine, workers] = await all([
        () => run('list-workspaces'),
        () => run('list-users'),
        () => run('list-users', '--workspace', String(made.workspace)),
        () => run('list-tokens'),
        () => run('list-tokens', '--user', String(made.user)),
        () => run('list-worker-tokens'),
      ])
      for (const listed of [workspaces, users, members, tokens, mine, workers]) {
        expect(listed.stdout).not.toMatch(/ps[ws]?_[\w-]{20,}|hash/)
      }
      expect(expectOutput(workspaces!, ['workspaces']).workspaces).toContainEqual({
        id: made.workspace,
        name: 'Acme Imports',
        created_at: expect.any(String),
        members: 1,
      })
      expect(expectOutput(users!, ['users']).users).toContainEqual({
        id: made.user,
        email,
        created_at: expect.any(String),
        workspaces: [{ id: made.workspace, role: 'admin' }],
      })
      expect(expectOutput(members!, ['users']).users.map((u: { id: number }) => u.id)).toEqual([made.user])

      const listed = expectOutput(mine!, ['tokens']).tokens as Array<Record<string, unknown>>
      expect(listed.map((t) => t.id)).toEqual(expect.arrayContaining([made.tokenId, made.revokedId]))
      expect(listed.every((t) => t.user_id === made.user && t.email === email)).toBe(true)
      const laptop = listed.find((t) => t.id === made.tokenId)!
      expect(Object.keys(laptop).sort()).toEqual(['created_at', 'email', 'expires_at', 'id', 'last_used_at', 'name', 'revoked_at', 'user_id'])
      expect(laptop).toMatchObject({ name: 'laptop', expires_at: null, revoked_at: null, last_used_at: expect.any(String) })
      expect(listed.find((t) => t.id === made.revokedId)).toMatchObject({ revoked_at: expect.any(String), expires_at: expect.any(String) })
      expect(expectOutput(tokens!, ['tokens']).tokens.length).toBeGreaterThanOrEqual(listed.length)

      const worker = (expectOutput(workers!, ['worker_tokens']).worker_tokens as Array<Record<string, unknown>>).find((t) => t.id === made.revokedWorkerId)
      expect(worker).toEqual({
        id: made.revokedWorkerId,
        name: 'importer',
        workspace_ids: null,
        types: null,
        created_at: expect.any(String),
        expires_at: null,
        revoked_at: expect.any(String),
        last_used_at: null,
      })
    })

    it('says which email is taken when a user exists already', async () => {
      expectExactFailure(
        await run('create-user', '--email', email, '--workspace', String(made.workspace)),
        `a user with email ${email} already exists (id ${made.user}); add-member --user ${made.user} puts it in another workspace`,
      )
    })
  })
}

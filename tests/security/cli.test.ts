// The admin CLI: scoped worker tokens (`create-worker-token --workspace … --type …`) and the known
// roles, as a child process on an embedded DATA_DIR; the scoped token it prints is checked by the server's
// own authenticator.
import { afterAll, describe, expect, it } from 'bun:test'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Authenticator } from '../../src/auth/authenticator'
import { createSession } from '../../src/auth/queries'
import { openDatabase } from '../../src/db/client'
import { BUN, ROOT } from '../support/helpers'

const dir = mkdtempSync(join(tmpdir(), 'ps-sec-cli-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

async function cli(...args: string[]) {
  const env: Record<string, string> = {}
  for (const [key, value] of Object.entries(process.env)) if (value !== undefined && !['DATABASE_URL', 'REDIS_URL'].includes(key)) env[key] = value
  const proc = Bun.spawn([BUN, 'src/cli.ts', ...args], { cwd: ROOT, env: { ...env, DATA_DIR: dir }, stdout: 'pipe', stderr: 'pipe' })
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited])
  return { code, stdout, stderr, json: code === 0 ? JSON.parse(stdout) : null }
}

describe('cli: scoped worker tokens and roles', () => {
  it('creates a worker token scoped to workspaces and types (repeatable flags), and refuses unknown ones', async () => {
    const a = (await cli('create-workspace', '--name', 'A')).json
    const b = (await cli('create-workspace', '--name', 'B')).json
    const made = await cli(
      'create-worker-token',
      '--name',
      'importers',
      '--workspace',
      String(a.id),
      '--workspace',
      String(b.id),
      '--type',
      'csv_import',
      '--type',
      'pdf.render',
    )
    expect(made.code).toBe(0)
    expect(made.json).toMatchObject({ workspace_ids: [a.id, b.id], types: ['csv_import', 'pdf.render'] })
    // Scoped by default: a global token must be asked for.
    const unscoped = await cli('create-worker-token')
    expect(unscoped.code).toBe(1)
    expect(unscoped.stderr).toContain('--all-workspaces')
    expect((await cli('create-worker-token', '--all-workspaces', '--workspace', String(a.id))).code).toBe(1)
    const global = await cli('create-worker-token', '--all-workspaces')
    expect(Object.keys(global.json).sort()).toEqual(['id', 'token'])
    expect((await cli('create-worker-token', '--workspace', '999')).code).toBe(1)
    expect((await cli('create-worker-token', '--type', 'Bad Type')).code).toBe(1)

    const db = await openDatabase({ dataDir: dir, poolMax: 1 })
    try {
      const auth = new Authenticator(db.sql, 0)
      expect(await auth.authenticateWorker(made.json.token)).toEqual({ tokenId: made.json.id, workspaceIds: [a.id, b.id], types: ['csv_import', 'pdf.render'] })
      expect(await auth.authenticateWorker(global.json.token)).toEqual({ tokenId: global.json.id, workspaceIds: null, types: null })
    } finally {
      await db.close()
    }
  })

  it('lists a user’s open sessions and revokes one, or all of them; a revoked session no longer authenticates', async () => {
    const ws = (await cli('create-workspace', '--name', 'S')).json
    const user = (await cli('create-user', '--email', 'signed-in@example.com', '--workspace', String(ws.id))).json
    const other = (await cli('create-user', '--email', 'bystander@example.com', '--workspace', String(ws.id))).json
    const token = (await cli('create-token', '--user', String(user.id))).json
    const otherToken = (await cli('create-token', '--user', String(other.id))).json
    // Sessions as POST /auth/session makes them (its route is tested in http.test.ts).
    const db = await openDatabase({ dataDir: dir, poolMax: 1 })
    const day = new Date(Date.now() + 86_400_000)
    const [s1, s2, s3] = [
      await createSession(db.sql, user.id, token.id, day),
      await createSession(db.sql, user.id, token.id, day),
      await createSession(db.sql, other.id, otherToken.id, day),
    ]
    await db.close()

    const listed = await cli('list-sessions', '--user', String(user.id))
    expect(listed.code).toBe(0)
    expect(listed.json.sessions.map((x: any) => x.id)).toEqual([s2.id, s1.id])
    expect(listed.json.sessions[0]).toMatchObject({ api_token_id: token.id })
    expect(JSON.stringify(listed.json)).not.toContain(s1.secret) // never the secret

    expect((await cli('revoke-sessions', '--id', String(s1.id))).json).toEqual({ revoked: [s1.id] })
    expect((await cli('list-sessions', '--user', String(user.id))).json.sessions.map((x: any) => x.id)).toEqual([s2.id])
    expect((await cli('revoke-sessions', '--user', String(user.id))).json).toEqual({ revoked: [s2.id] })
    expect((await cli('revoke-sessions', '--user', String(user.id))).json).toEqual({ revoked: [] })
    // Exactly one of --id and --user.
    expect((await cli('revoke-sessions')).code).toBe(1)
    expect((await cli('revoke-sessions', '--id', '1', '--user', '1')).stderr).toContain('one of them')

    const check = await openDatabase({ dataDir: dir, poolMax: 1 })
    try {
      const auth = new Authenticator(check.sql, 0)
      const refused = (secret: string) =>
        auth.authenticate(secret).then(
          () => false,
          () => true,
        )
      expect(await refused(s1.secret)).toBe(true)
      expect(await refused(s2.secret)).toBe(true)
      // Another user's session is untouched.
      expect((await auth.authenticate(s3.secret)).sessionId).toBe(s3.id)
    } finally {
      await check.close()
    }
  }, 120_000)

  it('accepts the four roles and refuses any other', async () => {
    const ws = (await cli('create-workspace', '--name', 'R')).json
    for (const role of ['owner', 'admin', 'member', 'viewer']) {
      expect((await cli('create-user', '--email', `${role}@example.com`, '--workspace', String(ws.id), '--role', role)).code).toBe(0)
    }
    const refused = await cli('create-user', '--email', 'x@example.com', '--workspace', String(ws.id), '--role', 'superuser')
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain('--role must be one of owner, admin, member, viewer')
  })
})

// Taking a member out of a workspace (cli remove-member) ends what they have open there, on every instance,
// within AUTH_CACHE_MS, as revoking a token does: their workspace and process streams of it, and their access
// to it; their other workspaces stay theirs until the last one goes, which revokes their API tokens.
import { describe, expect, it } from 'bun:test'
import { addMember } from '../../src/auth/queries'
import { runCommand } from '../../src/cli'
import { BUN, createTenant, hasPostgres, listeningServer, restAs, runToEnd, testDatabase, within } from '../support/helpers'

const AUTH_CACHE_MS = 1000
const { db, url } = await testDatabase()
// Two instances on one database (and one Redis when REDIS_URL is set): a stream on either must end.
const env = { AUTH_CACHE_MS: String(AUTH_CACHE_MS), SSE_MAX_MS: '120000', SSE_KEEPALIVE_MS: '200' }
const one = await listeningServer(env, db)
const two = await listeningServer(env, db)

/** An open SSE response and a promise of its end (true once the server ended it). */
async function openStream(base: string, path: string, token: string) {
  const response = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}` } })
  expect(response.status).toBe(200)
  const reader = response.body!.getReader()
  await reader.read()
  let ended = false
  const end = (async () => {
    for (;;) if ((await reader.read()).done) return (ended = true)
  })().catch(() => (ended = true))
  return { end, isEnded: () => ended, cancel: () => reader.cancel().catch(() => {}) }
}

describe('remove-member', () => {
  it('ends their streams of that workspace on both instances within AUTH_CACHE_MS, and only those', async () => {
    const tenant = await createTenant(db.sql)
    const other = await createTenant(db.sql)
    await addMember(db.sql, tenant.userId, other.workspaceId, 'member')
    const a = tenant.workspaceId
    const b = other.workspaceId
    const p = await restAs(one.url, tenant.token).create('member_stream')

    const workspaceStream = await openStream(one.url, `/processes/stream?workspace_id=${a}`, tenant.token)
    const processStream = await openStream(two.url, `/processes/${p.id}/stream`, tenant.token)
    const otherWorkspace = await openStream(two.url, `/processes/stream?workspace_id=${b}`, tenant.token)

    const removed = (await runCommand(db.sql, ['remove-member', '--user', String(tenant.userId), '--workspace', String(a)])) as any
    expect(removed).toEqual({ user_id: tenant.userId, workspace_id: a, removed: true, role: 'owner', memberships_left: 1, tokens_revoked: [] })

    // Within AUTH_CACHE_MS (the watch runs every half of it), plus slack for a loaded machine.
    expect(await within(workspaceStream.end, AUTH_CACHE_MS + 4000, false)).toBe(true)
    expect(await within(processStream.end, AUTH_CACHE_MS + 4000, false)).toBe(true)
    // Their stream of the workspace they are still in goes on (keepalives every 200 ms meanwhile).
    expect(otherWorkspace.isEnded()).toBe(false)
    await Bun.sleep(AUTH_CACHE_MS + 200)
    expect(otherWorkspace.isEnded()).toBe(false)

    // New requests: 403 for the workspace they left (after the cached look-up expired), 200 for the other.
    const headers = { authorization: `Bearer ${tenant.token}` }
    for (const base of [one.url, two.url]) {
      expect((await fetch(`${base}/processes?workspace_id=${a}`, { headers })).status).toBe(403)
      expect((await fetch(`${base}/processes/${p.id}`, { headers })).status).toBe(404)
      expect((await fetch(`${base}/processes?workspace_id=${b}`, { headers })).status).toBe(200)
    }

    // The last workspace: the user's API tokens are revoked, so the stream ends and the token is refused.
    const last = (await runCommand(db.sql, ['remove-member', '--user', String(tenant.userId), '--workspace', String(b)])) as any
    expect(last).toMatchObject({ removed: true, memberships_left: 0, tokens_revoked: [tenant.tokenId] })
    expect(await within(otherWorkspace.end, AUTH_CACHE_MS + 4000, false)).toBe(true)
    await Bun.sleep(AUTH_CACHE_MS + 100)
    expect((await fetch(`${one.url}/me`, { headers })).status).toBe(401)
  }, 30_000)

  it('revokes their API tokens on request while they keep other workspaces; refuses a non-member', async () => {
    const tenant = await createTenant(db.sql)
    const other = await createTenant(db.sql)
    await addMember(db.sql, tenant.userId, other.workspaceId, 'viewer')
    const out = (await runCommand(db.sql, [
      'remove-member',
      '--user',
      String(tenant.userId),
      '--workspace',
      String(tenant.workspaceId),
      '--revoke-tokens',
    ])) as any
    expect(out).toMatchObject({ memberships_left: 1, tokens_revoked: [tenant.tokenId] })
    await Bun.sleep(AUTH_CACHE_MS + 100)
    expect((await fetch(`${two.url}/me`, { headers: { authorization: `Bearer ${tenant.token}` } })).status).toBe(401)
    await expect(runCommand(db.sql, ['remove-member', '--user', String(tenant.userId), '--workspace', String(tenant.workspaceId)])).rejects.toThrow(
      `user ${tenant.userId} is not a member of workspace ${tenant.workspaceId}`,
    )
  })

  it.skipIf(!hasPostgres)('is a command of the CLI, printing one JSON object', async () => {
    const tenant = await createTenant(db.sql)
    const other = await createTenant(db.sql)
    await addMember(db.sql, tenant.userId, other.workspaceId, 'member')
    const run = await runToEnd([BUN, 'src/cli.ts', 'remove-member', '--user', String(tenant.userId), '--workspace', String(other.workspaceId)], {
      DATABASE_URL: url,
    })
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' })
    expect(JSON.parse(run.stdout)).toMatchObject({ user_id: tenant.userId, workspace_id: other.workspaceId, removed: true, tokens_revoked: [] })
    const again = await runToEnd([BUN, 'src/cli.ts', 'remove-member', '--user', String(tenant.userId), '--workspace', String(other.workspaceId)], {
      DATABASE_URL: url,
    })
    expect(again.code).toBe(1)
    expect(again.stderr).toContain('is not a member')
  })
})

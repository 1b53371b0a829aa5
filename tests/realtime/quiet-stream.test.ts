// Bun closes a connection idle for its idleTimeout (10 s by default): a stream with nothing to say for longer
// than that must still last its whole window. Keepalives are set to 20 s here, so the stream is silent for
// 20 s and must then carry on to its 25-second end.
import { expect, it } from 'bun:test'
import { createTenant, listeningServer, testDatabase } from '../support/helpers'
import { readFrames } from '../support/sse-client'

it('keeps a stream with no updates open for the full 25-second window, then ends it cleanly', async () => {
  const { db } = await testDatabase()
  const server = await listeningServer({ SSE_MAX_MS: '25000', SSE_KEEPALIVE_MS: '20000' }, db)
  const tenant = await createTenant(db.sql)
  const headers = { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' }
  const p = (await (await fetch(`${server.url}/processes`, { method: 'POST', headers, body: JSON.stringify({ type: 'quiet' }) })).json()) as any
  const started = Date.now()
  const { frames, ended } = await readFrames(await fetch(`${server.url}/processes/${p.id}/stream`, { headers }), { maxMs: 40_000 })
  const elapsed = Date.now() - started
  expect(ended).toBe(true)
  expect(elapsed).toBeGreaterThanOrEqual(24_500)
  expect(elapsed).toBeLessThan(30_000)
  expect(frames.map((f) => (f.retry ? 'retry' : f.comment ? f.raw : 'state'))).toEqual(['retry', 'state', ': keepalive'])
}, 45_000)

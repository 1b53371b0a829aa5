// What a client sees when it cannot get in: the monitor against a port nobody listens on reports its
// connection state, and the worker SDK against a real server that refuses its token (unknown at the upgrade, or
// revoked while it was connected) reports an auth error and stops retrying.
import { describe, expect, it } from 'bun:test'
import WebSocket from 'ws'
import { monitorProcess, monitorWorkspace, type ConnectionState } from '@processes/client'
import { connectWorker, WorkerAuthError, type WebSocketConstructor, type WebSocketLike, type WorkerEvent } from '@processes/client/worker'
import { freePort, listeningServer, testDatabase, waitFor, workerToken } from '../support/helpers'

describe('monitor connection state', () => {
  it('monitorProcess against a closed port: connecting, reconnecting, then polling; stop() ends the callbacks', async () => {
    const port = await freePort()
    const states: ConnectionState[] = []
    const monitor = monitorProcess(`http://127.0.0.1:${port}`, 1, {
      token: 't',
      pollIntervalMs: 50,
      onUpdate: () => {},
      onDone: () => {},
      onConnectionState: (state) => states.push(state),
    })
    await waitFor(
      () => states.includes('polling'),
      30_000,
      () => `polling, after ${states.join(' → ')}`,
    )
    expect(states.slice(0, 2)).toEqual(['connecting', 'reconnecting'])
    monitor.stop()
    const count = states.length
    await Bun.sleep(300)
    expect(states.length).toBe(count)
  }, 40_000)

  it('monitorWorkspace against a closed port keeps reporting reconnecting, with the failures counted', async () => {
    const port = await freePort()
    const seen: { state: ConnectionState; failures: number }[] = []
    const monitor = monitorWorkspace(`http://127.0.0.1:${port}`, {
      token: 't',
      onUpdate: () => {},
      onConnectionState: (state, info) => seen.push({ state, ...info }),
    })
    await waitFor(() => seen.some((s) => s.state === 'reconnecting'), 20_000, 'reconnecting')
    expect(seen[0]!.state).toBe('connecting')
    expect(seen.find((s) => s.state === 'reconnecting')!.failures).toBeGreaterThanOrEqual(1)
    monitor.stop()
  }, 30_000)
})

describe('worker SDK auth errors against a real server', async () => {
  const { db } = await testDatabase()
  // No auth cache, so a revoked token is refused at the next connect.
  const server = await listeningServer({ AUTH_CACHE_MS: '0' }, db)

  it('a token the server does not know: an auth error, and the worker stops instead of retrying', async () => {
    const errors: Error[] = []
    const events: WorkerEvent[] = []
    let sockets = 0
    class Counted extends WebSocket {
      constructor(url: string) {
        super(url)
        sockets++
      }
    }
    const worker = connectWorker(server.url, 'not-a-token', {
      WebSocket: Counted as unknown as WebSocketConstructor,
      reconnectMinMs: 20,
      handler: () => {},
      onError: (error) => errors.push(error),
      onEvent: (event) => events.push(event),
    })
    const stopped = await worker.stopped
    expect(stopped.reason).toBe('unauthenticated')
    expect(stopped.error).toBeInstanceOf(WorkerAuthError)
    expect(stopped.error!.status).toBe(401)
    expect(stopped.error!.code).toBe('unauthenticated')
    expect(errors.some((e) => e instanceof WorkerAuthError)).toBe(true)
    expect(events.at(-1)).toMatchObject({ type: 'stopped', reason: 'unauthenticated' })
    await Bun.sleep(300)
    expect(sockets).toBe(1)
    await worker.close()
    // Once: the refusal stops it; the close that follows (its own, and this one) adds no second `stopped`.
    expect(events.filter((e) => e.type === 'stopped')).toEqual([expect.objectContaining({ reason: 'unauthenticated' })])
    expect(await worker.stopped).toMatchObject({ reason: 'unauthenticated' })
  }, 30_000)

  it('a token revoked while connected: the next connect is refused, reported, and the worker stops', async () => {
    const token = await workerToken(db.sql)
    const opened: WebSocketLike[] = []
    class Tracked extends WebSocket {
      constructor(url: string) {
        super(url)
        opened.push(this as unknown as WebSocketLike)
      }
    }
    const events: WorkerEvent[] = []
    const worker = connectWorker(server.url, token, {
      WebSocket: Tracked as unknown as WebSocketConstructor,
      reconnectMinMs: 20,
      claimWaitMs: 200,
      handler: () => {},
      onEvent: (event) => events.push(event),
    })
    await waitFor(() => events.some((e) => e.type === 'connected'), 15_000, 'connected')
    await db.sql`update worker_tokens set revoked_at = now()`
    opened.at(-1)!.close(4000, 'test drops the connection')
    const stopped = await worker.stopped
    expect(stopped).toMatchObject({ reason: 'unauthenticated', error: { status: 401 } })
    const count = opened.length
    await Bun.sleep(300)
    expect(opened.length).toBe(count)
  }, 30_000)
})

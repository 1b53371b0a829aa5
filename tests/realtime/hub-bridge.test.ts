// The hub over a real Redis: what a change committed on this instance does, seen from another process
// subscribed to the same Redis (standing in for another instance).
import { afterAll, describe, expect, it } from 'bun:test'
import { processChannel, workerChannel, workspaceChannel } from '../../src/hub/hub'
import { RedisBridge } from '../../src/hub/redis'
import { Metrics } from '../../src/ops/metrics'
import { createProcessHub } from '../../src/processes/hub-rules'
import type { Process } from '../../src/processes/model'
import { BUN, hasRedis, quietLogger, redisPrefix, waitFor } from '../support/helpers'

const state = (id: number, version: number, status: Process['status'] = 'running'): Process => ({
  id,
  workspace_id: 7,
  type: 'bridge_test',
  status,
  progress: version,
  message: null,
  error: null,
  attempts: 1,
  version,
  worker_id: 'w',
  created_by: null,
  created_at: '2026-12-02T00:00:00.000Z',
  updated_at: '2026-12-02T00:00:00.000Z',
  started_at: '2026-12-02T00:00:00.000Z',
  finished_at: null,
  priority: 0,
  run_at: '2026-12-02T00:00:00.000Z',
  max_attempts: 1,
  tags: [],
  parent_id: null,
  root_id: id,
  children: null,
  error_stack: null,
  metadata: {},
  result_summary: null,
})

/** Another process subscribed to channels: it prints each message with the wall-clock time it arrived. */
function otherInstance(url: string, channels: string[]) {
  const script = `
    import Redis from 'ioredis'
    const sub = new Redis(${JSON.stringify(url)})
    sub.on('message', (channel, message) => console.log(JSON.stringify({ at: Date.now(), channel, message })))
    await sub.subscribe(...${JSON.stringify(channels)})
    console.log(JSON.stringify({ ready: true }))`
  const proc = Bun.spawn([BUN, '-e', script], { cwd: new URL('../..', import.meta.url).pathname, stdout: 'pipe', stderr: 'inherit' })
  const lines: any[] = []
  void (async () => {
    let pending = ''
    for await (const chunk of proc.stdout as ReadableStream<Uint8Array>) {
      pending += new TextDecoder().decode(chunk)
      let nl: number
      while ((nl = pending.indexOf('\n')) >= 0) {
        lines.push(JSON.parse(pending.slice(0, nl)))
        pending = pending.slice(nl + 1)
      }
    }
  })()
  afterAll(() => proc.kill('SIGKILL'))
  return { lines, ready: () => waitFor(() => lines.some((l) => l.ready), 10_000, 'the other subscriber') }
}

describe('the hub on its own', () => {
  it('runs a fan-out left for after the replies once the turn is over, or first when anything else arrives', async () => {
    const hub = createProcessHub()
    const heard: string[] = []
    await hub.watchWorkspace(7, (p) => heard.push(`${p.id}@${p.version}`))
    hub.publishAll([state(501, 2), state(502, 2)], { afterReplies: true })
    await Promise.resolve()
    heard.push('replies')
    await Bun.sleep(0)
    expect(heard).toEqual(['replies', '501@2', '502@2'])

    heard.length = 0
    hub.publishAll([state(501, 3)], { afterReplies: true })
    // A newer state arriving before the waiting fan-out ran (a transition, a Redis message) does not overtake it.
    hub.deliver(state(501, 4))
    hub.publishAll([state(501, 5)])
    expect(heard).toEqual(['501@3', '501@4', '501@5'])
    await Bun.sleep(0)
    expect(heard).toEqual(['501@3', '501@4', '501@5'])
  })
})

describe.skipIf(!hasRedis)('the hub with a Redis bridge', async () => {
  if (!hasRedis) return
  const prefix = redisPrefix()
  const hub = createProcessHub()
  const metrics = new Metrics()
  const bridge = new RedisBridge({ url: process.env.REDIS_URL!, prefix, hub, log: quietLogger(), metrics, onResync: async () => {} })
  hub.attach(bridge)
  await bridge.connect()
  afterAll(() => bridge.close())

  it("sends a batch of changes to the other instances before this instance's own (slow) fan-out", async () => {
    const ids = [101, 102, 103]
    const other = otherInstance(
      process.env.REDIS_URL!,
      ids.map((id) => prefix + processChannel(id)),
    )
    await other.ready()
    // A local stream whose delivery takes 400 ms of this event loop, as a fan-out to thousands of streams does.
    const delivered: number[] = []
    const unwatch = await hub.watch(101, (p) => {
      delivered.push(p.version)
      const until = Date.now() + 400
      while (Date.now() < until) {}
    })
    const publishedAt = Date.now()
    hub.publishAll(ids.map((id) => state(id, 2)))
    const localDoneAt = Date.now()
    expect(delivered).toEqual([2])
    expect(localDoneAt - publishedAt).toBeGreaterThanOrEqual(400)

    await waitFor(() => other.lines.filter((l) => l.channel).length === ids.length, 5000, 'the three changes on the other subscriber')
    const arrivals = other.lines.filter((l) => l.channel)
    // The other instance had every change while this one was still busy with its own stream.
    for (const m of arrivals) expect(m.at).toBeLessThan(localDoneAt)
    expect(arrivals.map((m) => JSON.parse(m.message).id).sort()).toEqual(ids)
    // One publish per change (process and workspace channels, counted once).
    expect(metrics.counters.redis_publishes).toBe(ids.length)
    unwatch()
  })

  it("sends a worker's channel only the states that end its leases, not its progress", async () => {
    const other = otherInstance(process.env.REDIS_URL!, [prefix + workerChannel('w')])
    await other.ready()
    const heard: Process[] = []
    const unwatch = await hub.watchWorker('w', (p) => heard.push(p))
    hub.publishAll([state(301, 2), state(301, 3), state(302, 2, 'cancelled'), state(303, 4, 'failed')])
    expect(heard.map((p) => [p.id, p.status])).toEqual([
      [302, 'cancelled'],
      [303, 'failed'],
    ])
    await waitFor(() => other.lines.filter((l) => l.channel).length >= 2, 5000, 'the two lease ends on the worker channel')
    await Bun.sleep(200)
    expect(other.lines.filter((l) => l.channel).map((l) => JSON.parse(l.message).id)).toEqual([302, 303])
    unwatch()
  })

  it('publishes every change on its process channel and its workspace channel', async () => {
    const other = otherInstance(process.env.REDIS_URL!, [prefix + processChannel(201), prefix + workspaceChannel(7)])
    await other.ready()
    hub.publish(state(201, 5))
    await waitFor(() => other.lines.filter((l) => l.channel).length === 2, 5000, 'both channels')
    const channels = other.lines.filter((l) => l.channel).map((l) => l.channel)
    expect(channels.sort()).toEqual([prefix + processChannel(201), prefix + workspaceChannel(7)].sort())
    for (const m of other.lines.filter((l) => l.channel)) expect(JSON.parse(m.message)).toMatchObject({ id: 201, version: 5 })
  })

  it("sends a batch's process channels, which streams wait on, before any of its workspace channels", async () => {
    const ids = [401, 402, 403, 404]
    const other = otherInstance(process.env.REDIS_URL!, [...ids.map((id) => prefix + processChannel(id)), prefix + workspaceChannel(7)])
    await other.ready()
    hub.publishAll(ids.map((id) => state(id, 2)))
    await waitFor(() => other.lines.filter((l) => l.channel).length === 2 * ids.length, 5000, 'every process and workspace message')
    const kinds: string[] = other.lines.filter((l) => l.channel).map((l) => (l.channel === prefix + workspaceChannel(7) ? 'workspace' : 'process'))
    expect(kinds).toEqual([...ids.map(() => 'process'), ...ids.map(() => 'workspace')])
  })
})

// The hub is generic: it keys states by id, version and workspace only, and takes the wire text and the
// worker rule from its creator. Here with a payload that is not a Process.
import { afterAll, describe, expect, it } from 'bun:test'
import { Hub, type HubRules } from '../../src/hub/hub'
import { RedisBridge } from '../../src/hub/redis'
import { Metrics } from '../../src/ops/metrics'
import { hasRedis, quietLogger, redisPrefix, waitFor } from '../support/helpers'

interface Note {
  id: number
  version: number
  workspace_id: number
  text: string
  /** The worker that must hear this note, if any. */
  for_worker: string | null
}

const note = (id: number, version: number, text: string, for_worker: string | null = null): Note => ({ id, version, workspace_id: 3, text, for_worker })

const serialised: number[] = []
const NOTE_RULES: HubRules<Note> = {
  channelPrefix: 'note',
  serialise: (n) => {
    serialised.push(n.id)
    return `${n.id}|${n.version}|${n.workspace_id}|${n.text}|${n.for_worker ?? ''}`
  },
  parse: (text) => {
    const [id, version, workspace, body, worker] = text.split('|')
    return { id: Number(id), version: Number(version), workspace_id: Number(workspace), text: body!, for_worker: worker || null }
  },
  workerOf: (n) => n.for_worker,
}

describe('the hub with a payload of its creator', () => {
  it('delivers newer versions by id, every state by workspace, and to a worker what the rule sends it', async () => {
    const hub = new Hub(NOTE_RULES)
    const byId: string[] = []
    const byWorkspace: string[] = []
    const byWorker: string[] = []
    await hub.watch(1, (n) => byId.push(`${n.text}@${n.version}`))
    await hub.watchWorkspace(3, (n) => byWorkspace.push(`${n.id}:${n.text}`))
    await hub.watchWorker('w1', (n) => byWorker.push(`${n.id}:${n.text}`))

    hub.publishAll([note(1, 1, 'a'), note(2, 1, 'b', 'w1'), note(1, 3, 'c', 'w2')])
    hub.deliver(note(1, 2, 'older')) // older than version 3: not delivered by id
    expect(byId).toEqual(['a@1', 'c@3'])
    expect(byWorkspace).toEqual(['1:a', '2:b', '1:c', '1:older'])
    expect(byWorker).toEqual(['2:b'])
  })
})

describe.skipIf(!hasRedis)('the hub with a payload of its creator, across a Redis bridge', async () => {
  if (!hasRedis) return
  const prefix = redisPrefix()
  const connect = async () => {
    const hub = new Hub(NOTE_RULES)
    const bridge = new RedisBridge({ url: process.env.REDIS_URL!, prefix, hub, log: quietLogger(), metrics: new Metrics(), onResync: async () => {} })
    hub.attach(bridge)
    await bridge.connect()
    afterAll(() => bridge.close())
    return hub
  }
  const [a, b] = [await connect(), await connect()]

  it('carries the states as the rules write and read them, to the id, workspace and worker channels', async () => {
    const byId: Note[] = []
    const byWorkspace: Note[] = []
    const byWorker: Note[] = []
    await b.watch(7, (n) => byId.push(n))
    await b.watchWorkspace(3, (n) => byWorkspace.push(n))
    await b.watchWorker('w7', (n) => byWorker.push(n))
    serialised.length = 0
    a.publishAll([note(7, 1, 'one / two'), note(8, 1, 'for w7', 'w7')])
    // Each channel a state came on delivers it (a workspace stream de-duplicates by version): wait for all three.
    const ids = (notes: Note[]) => [...new Set(notes.map((n) => n.id))].sort()
    await waitFor(() => byId.length > 0 && ids(byWorkspace).length === 2 && byWorker.length > 0, 5000, 'the notes on the other hub')
    expect(byId).toEqual([note(7, 1, 'one / two')])
    expect(ids(byWorkspace)).toEqual([7, 8])
    expect(byWorkspace.find((n) => n.id === 8)).toEqual(note(8, 1, 'for w7', 'w7'))
    expect(byWorker.every((n) => n.id === 8)).toBe(true)
    // The text went out through the creator's serialiser, not JSON.stringify.
    expect([...new Set(serialised)].sort()).toEqual([7, 8])
  })
})

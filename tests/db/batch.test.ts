// Batched point reads (src/db/batch.ts, src/processes/reader.ts) against the real database: look-ups of one
// turn share one query, each caller gets its own row (or null), a failure reaches every caller of that batch,
// a read asked for after a commit never gets an answer from a query sent before it, and no caller ever sees
// another workspace's process.
import { describe, expect, it } from 'bun:test'
import { Batcher } from '../../src/db/batch'
import type { Process } from '../../src/processes/model'
import { getProcesses } from '../../src/processes/queries/reads'
import { createProcessHub } from '../../src/processes/hub-rules'
import { NO_LIVE_STATES } from '../../src/processes/live'
import { ProcessReader } from '../../src/processes/reader'
import { createTenant, hasPostgres, testDatabase } from '../support/helpers'

const { db } = await testDatabase()
const { sql } = db
const a = await createTenant(sql)
const b = await createTenant(sql)

async function insert(workspaceId: number, count: number): Promise<number[]> {
  const rows = await sql<{ id: number }[]>`
    insert into processes (workspace_id, type, metadata)
    select ${workspaceId}, 'batch_test', jsonb_build_object('n', g) from generate_series(1, ${count}) g
    returning id`
  return rows.map((r) => r.id).sort((x, y) => x - y)
}

/** The real query, with the id lists it was sent recorded. */
function recordingBatcher(maxInFlight?: number, maxBatch?: number) {
  const queries: number[][] = []
  const batcher = new Batcher(
    (ids) => {
      queries.push([...ids])
      return getProcesses(sql, ids)
    },
    maxInFlight,
    maxBatch,
  )
  return { batcher, queries }
}

describe('Batcher', () => {
  it('answers look-ups made in one turn with one query, one row per caller, null for a missing id', async () => {
    const ids = await insert(a.workspaceId, 30)
    const { batcher, queries } = recordingBatcher()
    const missing = ids[ids.length - 1]! + 1_000_000
    const asked = [...ids, ids[0]!, ids[0]!, missing]
    const rows = await Promise.all(asked.map((id) => batcher.load(id)))
    expect(queries.length).toBe(1)
    expect(new Set(queries[0]!).size).toBe(queries[0]!.length) // each id asked once, however many callers
    expect(queries[0]!.sort((x, y) => x - y)).toEqual([...ids, missing].sort((x, y) => x - y))
    rows.forEach((row, i) => {
      if (asked[i] === missing) expect(row).toBeNull()
      else expect(row!.id).toBe(asked[i]!)
    })
    expect(rows[0]!.metadata).toEqual({ n: 1 })
  })

  it('goes out at once under light load: a lone look-up is its own batch', async () => {
    const [id] = await insert(a.workspaceId, 1)
    const { batcher, queries } = recordingBatcher()
    for (let i = 0; i < 3; i++) expect((await batcher.load(id!))!.id).toBe(id!)
    expect(queries).toEqual([[id!], [id!], [id!]])
  })

  it('splits more ids than maxBatch into several queries, each answered', async () => {
    const ids = await insert(a.workspaceId, 25)
    const { batcher, queries } = recordingBatcher(1, 10)
    const rows = await Promise.all(ids.map((id) => batcher.load(id)))
    expect(rows.map((r) => r!.id)).toEqual(ids)
    expect(queries.map((q) => q.length)).toEqual([10, 10, 5])
  })

  it('queues look-ups behind the batches in flight, so batches grow with the load', async () => {
    const ids = await insert(a.workspaceId, 40)
    const { batcher, queries } = recordingBatcher(1)
    const first = batcher.load(ids[0]!)
    await new Promise((resolve) => setImmediate(resolve)) // the first batch is out, holding the one slot
    const rest = ids.slice(1).map((id) => batcher.load(id))
    await Promise.all([first, ...rest])
    expect(queries.length).toBe(2)
    expect(queries[1]!.length).toBe(39)
  })

  it('rejects every caller of a batch whose query fails, and the next batch works again', async () => {
    let fail = true
    const batcher = new Batcher((ids) => (fail ? sql`select * from no_such_table where id = any(${ids}::bigint[])` : getProcesses(sql, ids)) as never)
    const [x, y] = await insert(a.workspaceId, 2)
    const results = await Promise.allSettled([batcher.load(x!), batcher.load(y!), batcher.load(x!)])
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected'])
    fail = false
    expect((await batcher.load(y!))!.id).toBe(y!)
  })
})

describe('ProcessReader', () => {
  it("never hands a caller another workspace's process, even from a batch it shares with that workspace", async () => {
    const [mine] = await insert(a.workspaceId, 1)
    const [theirs] = await insert(b.workspaceId, 1)
    const reader = new ProcessReader(sql, NO_LIVE_STATES, createProcessHub())
    const [aMine, aTheirs, bTheirs, bMine, aText, bText, aVersion, bVersion] = await Promise.all([
      reader.find(mine!, [a.workspaceId]),
      reader.find(theirs!, [a.workspaceId]),
      reader.find(theirs!, [b.workspaceId]),
      reader.find(mine!, [b.workspaceId]),
      reader.findText(theirs!, [a.workspaceId]),
      reader.findText(theirs!, [b.workspaceId]),
      reader.version(theirs!, [a.workspaceId]),
      reader.version(theirs!, [b.workspaceId]),
    ])
    expect(aMine!.id).toBe(mine!)
    expect(aTheirs).toBeNull()
    expect(bTheirs!.id).toBe(theirs!)
    expect(bMine).toBeNull()
    expect(aText).toBeNull()
    expect(JSON.parse(bText!.json).id).toBe(theirs!)
    expect(aVersion).toBeNull()
    expect(bVersion).toMatchObject({ version: 1, workspace_id: b.workspaceId })
  })

  // PGlite has one backend that runs statements one after another, so only a real server can have a batch in
  // flight while another connection commits.
  it.skipIf(!hasPostgres)('answers a read asked for after a commit from a query sent after it, never an older batch', async () => {
    const [id] = await insert(a.workspaceId, 1)
    let sent = 0
    const batcher = new Batcher((ids) => {
      sent++
      // The first batch is slow: it is still in flight when the change below commits.
      return sent === 1 ? sql<Process[]>`select p.*, pg_sleep(0.3) from processes p where id = any(${ids}::bigint[])` : getProcesses(sql, ids)
    }, 2)
    const stale = batcher.load(id!)
    await Bun.sleep(50)
    await sql`update processes set progress = 42, version = version + 1 where id = ${id!}`
    const fresh = await batcher.load(id!)
    expect(fresh!.progress).toBe(42)
    expect(fresh!.version).toBe(2)
    expect(sent).toBe(2)
    // The slow batch began before the commit; whatever it saw, it was answered to the read that was made before.
    expect([0, 42]).toContain((await stale)!.progress)
  })
})

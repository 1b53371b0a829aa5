// unique_key on create (README: Queue): while a process with the key is pending or running in the workspace,
// a create with the same key returns that process (200, `Unique-Replayed: true`) instead of making another.
// The database decides: a partial unique index over pending and running rows (sql/010_queues.sql) and an
// insert that skips what conflicts with it, so two instances racing with one key make one process.
import type { Row, Sql } from '../db/client'
import type { Process } from './model'
import { insertProcessRows, type NewProcess, type ParentRef } from './queries/create'
import { toProcess } from './queries/rows'

/** The index's name, as a unique violation reports it (a retry to pending meeting a holder of its key). */
export const UNIQUE_KEY_INDEX = 'processes_unique_key_idx'

export interface Created {
  /** One per item, in the order given: the new process, or the one that holds the item's key. */
  processes: Process[]
  /** Per item: true when it was answered with an existing process. */
  replayed: boolean[]
  /** The new ones only (what is published and announced to waiting claims). */
  created: Process[]
}

/**
 * Inserts the items (in `sql`, a transaction), each keyed item only if its key is free. A key held by an
 * earlier item of the same call is answered with that item's process. A key whose holder finished between
 * the insert and the look-up is free again: that item is inserted in the next round.
 */
export async function insertUnique(
  sql: Sql,
  o: { workspaceId: number; createdBy: number | null; items: NewProcess[]; parent?: ParentRef | null },
): Promise<Created> {
  const out: Array<Process | undefined> = new Array(o.items.length)
  const replayed: boolean[] = o.items.map(() => false)
  const created: Process[] = []
  let todo = o.items.map((_, i) => i)
  for (let round = 0; todo.length > 0; round++) {
    if (round === 5) throw new Error('unique_key: the processes holding these keys kept finishing; try again')
    const rows = await insertProcessRows(sql, { ...o, items: todo.map((i) => o.items[i]!) })
    // Rows come in item order (ids ascend with it); a keyed item that is missing lost its key to a holder.
    const byKey = new Map<string, Row>()
    const unkeyed: Row[] = []
    for (const row of rows) {
      if (row.unique_key === null) unkeyed.push(row)
      else byKey.set(row.unique_key, row)
    }
    const held: number[] = []
    const taken = new Set<string>()
    let next = 0
    for (const i of todo) {
      const key = o.items[i]!.unique_key ?? null
      if (key === null) {
        const process = toProcess(unkeyed[next++]!)
        out[i] = process
        created.push(process)
        continue
      }
      const row = byKey.get(key)
      if (row && !taken.has(key)) {
        taken.add(key)
        const process = toProcess(row)
        out[i] = process
        created.push(process)
      } else held.push(i)
    }
    if (held.length === 0) break
    const keys = [...new Set(held.map((i) => o.items[i]!.unique_key!))]
    const holders = new Map(
      (
        await sql`
        select * from processes
         where workspace_id = ${o.workspaceId} and unique_key = any(${keys}::text[]) and unique_key is not null and status in ('pending', 'running')`
      ).map((row) => [row.unique_key as string, toProcess(row)]),
    )
    todo = []
    for (const i of held) {
      const holder = holders.get(o.items[i]!.unique_key!)
      if (holder) {
        out[i] = holder
        replayed[i] = true
      } else todo.push(i)
    }
  }
  return { processes: out as Process[], replayed, created }
}

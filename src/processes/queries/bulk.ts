// A bulk action's selection (src/processes/bulk.ts): how many processes it matches, and its batches, newest
// first, each locked in id order within its own transaction.
import type { Sql } from '../../db/client'
import type { BulkAction } from '../model'
import type { Status } from '../states'
import { SEARCH_SCAN_MAX, searchCondition } from './filters'
import { type ListFilter, listConditions } from './reads'

/** The list's filters, narrowed to the statuses the action leaves. */
export interface BulkSelection {
  filter: Omit<ListFilter, 'before' | 'limit'>
  action: BulkAction
  from: readonly Status[]
}

/** What a count saw: how many match, and the id range a run keeps to (rows made after the count are left alone). */
export interface BulkBounds {
  matched: number
  /** The newest matching id (0: none). */
  upper: number
  /** A search's: the oldest id its window read (0: no bound). */
  floor: number
}

function matching(sql: Sql, s: BulkSelection) {
  return sql`${listConditions(sql, s.filter)} and status = any(${s.from}::text[])`
}

/** Counts what the selection matches, reading at most `cap` + 1 rows (a search: its SEARCH_SCAN_MAX window). */
export async function countSelection(sql: Sql, s: BulkSelection, cap: number): Promise<BulkBounds> {
  if (s.filter.q === undefined) {
    const [row] = await sql<{ matched: number; upper: string | number | null }[]>`
      select count(*)::int as matched, max(id) as upper
        from (select id from processes where ${matching(sql, s)} order by id desc limit ${cap + 1}) m`
    return { matched: row!.matched, upper: Number(row!.upper ?? 0), floor: 0 }
  }
  const [row] = await sql<{ matched: number; upper: string | number | null; floor: string | number | null; scanned: number }[]>`
    with scan as (
      select id, ${searchCondition(sql, s.filter.q)} as hit
        from processes where ${matching(sql, s)}
       order by id desc
       limit ${SEARCH_SCAN_MAX}
    )
    select count(*) filter (where hit)::int as matched, max(id) filter (where hit) as upper,
           min(id) as floor, count(*)::int as scanned
      from scan`
  // A window that read everything has no floor: rows older than it do not exist.
  const floor = row!.scanned >= SEARCH_SCAN_MAX ? Number(row!.floor ?? 0) : 0
  return { matched: row!.matched, upper: Number(row!.upper ?? 0), floor }
}

/**
 * Processes whose action the bulk statement cannot take for them, so they take the single-process path
 * (src/processes/service.ts userAction): a cancel or a retry that cascades to children, a retry a parent's
 * end or a unique_key may refuse.
 */
function oneByOne(sql: Sql, action: BulkAction) {
  switch (action) {
    case 'cancel':
      return sql`children_total > 0`
    case 'retry':
      return sql`(children_total > 0 or parent_id is not null or unique_key is not null)`
    case 'discard':
      return sql`false`
  }
}

/** The next batch below `before`, locked in order (a racing batch or transition waits, never deadlocks on order). */
export async function lockBatch(sql: Sql, s: BulkSelection, bounds: BulkBounds, before: number, limit: number) {
  return sql<{ id: number; one_by_one: boolean }[]>`
    select id, ${oneByOne(sql, s.action)} as one_by_one
      from processes
     where ${matching(sql, s)}
       and id <= ${bounds.upper} and id < ${before}
       ${bounds.floor > 0 ? sql`and id >= ${bounds.floor}` : sql``}
       ${s.filter.q !== undefined ? sql`and ${searchCondition(sql, s.filter.q)}` : sql``}
     order by id desc
     limit ${limit}
       for update`
}

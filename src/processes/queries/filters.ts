// The list's filters as SQL conditions, shared by GET /processes, POST /processes/bulk and the stats, so a
// tab's count and the list behind it are the same predicate: the views and the search.
import type { Sql } from '../../db/client'
import type { View } from '../model'

/**
 * A view as a condition. Each matches a partial index of sql/016_console.sql: retrying and dead by their
 * predicates, scheduled by (workspace_id, run_at) where status = 'pending'. Literals, not parameters: the
 * planner matches a partial index only against constants.
 */
export function viewCondition(sql: Sql, view: View | undefined) {
  switch (view) {
    case undefined:
      return sql``
    case 'scheduled':
      return sql`and status = 'pending' and run_at > now()`
    case 'retrying':
      return sql`and status = 'pending' and attempts > 0`
    case 'dead':
      return sql`and status = 'failed' and attempts >= max_attempts`
  }
}

/**
 * How many of the newest rows the other filters match a search reads at most (per page, per bulk call): the
 * substring match cannot use an index, so this bounds what one search costs, and a tenant's search reads
 * only its own workspace's rows. The statement timeout (DB_STATEMENT_TIMEOUT_MS) is the second bound.
 */
export const SEARCH_SCAN_MAX = 10_000

/** `q` as an ILIKE pattern matching it anywhere, its own `%`, `_` and `\` taken literally. */
export function containsPattern(q: string): string {
  return `%${q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`
}

/** A search as a condition on a row of processes: message, error, type or the metadata's JSON text. */
export function searchCondition(sql: Sql, q: string) {
  const pattern = containsPattern(q)
  return sql`(message ilike ${pattern} escape '\\' or error ilike ${pattern} escape '\\'
              or type ilike ${pattern} escape '\\' or metadata::text ilike ${pattern} escape '\\')`
}

// Process trees, the service side: where new children may go (404, 409, 422 in the user's words),
// and how a trigger's refusal reads. The counts and the fan-in are the database's (sql/013_trees.sql,
// sql/016_tree_claims.sql).
import type { Sql } from '../db/client'
import { invalidRequest, invalidTransition, notFound } from '../errors'
import { MAX_DEPTH } from './model'
import type { ParentRef } from './queries/create'
import { lockParent, type ParentRow } from './queries/trees'

/** A parent that has ended takes no more children. */
const ENDED = new Set(['completed', 'failed', 'cancelled', 'waiting_review'])

/**
 * The parent new processes go under, locked for the transaction: unknown or in another workspace → 404, ended
 * → 409, the new processes (and `levels - 1` more below them) deeper than MAX_DEPTH → 422.
 */
export async function parentFor(sql: Sql, id: number, workspaceId: number, levels = 1): Promise<ParentRef & { row: ParentRow }> {
  const row = await lockParent(sql, id)
  if (!row || row.workspace_id !== workspaceId) throw notFound('Parent process not found')
  if (ENDED.has(row.status)) throw invalidTransition(`The parent process has ended (${row.status}); it takes no more children.`, { status: row.status })
  if (row.depth + levels > MAX_DEPTH)
    throw invalidRequest(`A tree is at most ${MAX_DEPTH} levels deep below its root; the parent is at depth ${row.depth}.`, [
      { path: '/parent_id', message: `depth over ${MAX_DEPTH}` },
    ])
  return { id: row.id, root_id: row.root_id, depth: row.depth, row }
}

/** The refusal sql/016_tree_claims.sql's trigger raises when a child would run again under an ended parent. */
export function isParentEnded(error: unknown): boolean {
  const e = error as { code?: string; hint?: string; message?: string }
  return e?.code === 'P0001' && (e.hint === 'tree_parent_ended' || (e.message ?? '').startsWith('tree: '))
}

export const parentEnded = () => invalidTransition('The parent of this process has ended; retry the parent instead.', { reason: 'parent_ended' })

// A process row as the API shows it: the one key order every response, stream and worker frame uses.
import type { Row } from '../../db/client'
import type { Process } from '../model'

/**
 * A row as the API shows it, in the API's one key order (the same as sql/003_queue.sql's process_json, so
 * POST, GET and the streams send byte-identical JSON). Not listed, as not part of the process: heartbeat_at
 * (lease bookkeeping: it changes without a new version) and worker_token_id (which token holds the lease).
 */
export function toProcess(row: Row): Process {
  return {
    id: row.id,
    workspace_id: row.workspace_id,
    type: row.type,
    status: row.status,
    progress: row.progress,
    message: row.message,
    error: row.error,
    attempts: row.attempts,
    version: row.version,
    worker_id: row.worker_id,
    created_by: row.created_by,
    created_at: row.created_at,
    updated_at: row.updated_at,
    started_at: row.started_at,
    finished_at: row.finished_at,
    priority: row.priority,
    run_at: row.run_at,
    max_attempts: row.max_attempts,
    tags: row.tags,
    ...treeFields(row),
    error_stack: row.error_stack ?? null,
    metadata: row.metadata,
    result_summary: row.result_summary,
  }
}

/**
 * The tree's fields of a process, in the API's key order, after the queue's fields: the parent, the
 * root (its own id on a root) and the children's counts (null when it never had children). The one place that
 * renders them from a row (sql/013_trees.sql's process_json says the same in SQL).
 */
export function treeFields(row: Row): Pick<Process, 'parent_id' | 'root_id' | 'children'> {
  return {
    parent_id: row.parent_id ?? null,
    root_id: row.root_id ?? row.id,
    children:
      row.children_total > 0
        ? {
            total: row.children_total,
            pending: row.children_pending,
            running: row.children_running,
            waiting_review: row.children_waiting_review,
            completed: row.children_completed,
            failed: row.children_failed,
            cancelled: row.children_cancelled,
          }
        : null,
  }
}

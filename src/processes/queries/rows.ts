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
    metadata: row.metadata,
    result_summary: row.result_summary,
  }
}

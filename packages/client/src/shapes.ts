// The API's shapes (README: API): what the server's routes and streams send.

/** Every status, in the server's order (src/processes/states.ts STATUSES; tests/client/shapes.test.ts checks it). */
export const PROCESS_STATUSES = ['pending', 'running', 'waiting_review', 'completed', 'failed', 'cancelled'] as const
export type ProcessStatus = (typeof PROCESS_STATUSES)[number]

/** A process as `GET /processes/{id}` and the streams return it. Ids and versions are JSON numbers. */
export interface Process {
  id: number
  workspace_id: number
  type: string
  status: ProcessStatus
  /** Integer 0–100. */
  progress: number
  /** The latest human-readable line. */
  message: string | null
  metadata: Record<string, unknown>
  result_summary: Record<string, unknown> | null
  error: string | null
  attempts: number
  /** +1 on every change, progress included: what "newer" means. */
  version: number
  worker_id: string | null
  created_by: number | null
  created_at: string
  updated_at: string
  started_at: string | null
  finished_at: string | null
  /** Queue fields: higher first; not claimed before `run_at`; `failed` only once `attempts` reaches `max_attempts`. */
  priority: number
  run_at: string
  max_attempts: number
  /** Set at creation (at most 10, e.g. `user:42`): filter lists and streams with `?tag=`. */
  tags: string[]
  /** Trees: the parent (null on a root), the root (its own id on a root). */
  parent_id: number | null
  root_id: number
  /** Its children by status; null when it never had any. */
  children: ChildCounts | null
  /** The stack the worker sent with its latest fail (capped); null otherwise, and after a retry. */
  error_stack: string | null
}

/** A parent's children by status (the parent's `progress` is their mean, or weighted by each child's `weight`). */
export interface ChildCounts {
  total: number
  pending: number
  running: number
  waiting_review: number
  completed: number
  failed: number
  cancelled: number
}

/** The fields of a Process, as the server's schema has them (src/processes/model.ts; checked by tests/client/shapes.test.ts). */
export const PROCESS_FIELDS = [
  'id',
  'workspace_id',
  'type',
  'status',
  'progress',
  'message',
  'metadata',
  'result_summary',
  'error',
  'attempts',
  'version',
  'worker_id',
  'created_by',
  'created_at',
  'updated_at',
  'started_at',
  'finished_at',
  'priority',
  'run_at',
  'max_attempts',
  'tags',
  'parent_id',
  'root_id',
  'children',
  'error_stack',
] as const satisfies readonly (keyof Process)[]
// Compile-time: PROCESS_FIELDS names every key of Process (and, by `satisfies`, nothing else).
const everyField: Exclude<keyof Process, (typeof PROCESS_FIELDS)[number]> extends never ? true : false = true
void everyField

/** The worker's part is over: the stream sends `event: done` and ends (README: The SSE stream). */
export const DONE_STATUSES: ReadonlySet<ProcessStatus> = new Set<ProcessStatus>(['completed', 'failed', 'cancelled', 'waiting_review'])

/** A chunk of a process's live output (`event: output` on its stream; `GET /processes/{id}/output`). */
export interface OutputChunk {
  /** 1, 2, … per process, in the order the worker appended them. */
  seq: number
  /** Text, or any JSON value but null, as the worker sent it. */
  chunk: unknown
}

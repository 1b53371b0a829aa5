// The shapes of the REST routes a console reads besides a Process (README: API): list rows, events, the
// stats, queues, schedules and workers pages, and the bulk action. tests/client/shapes.test.ts checks each
// against the server's own schema, so these never drift into hand copies.
import type { Process, ProcessStatus } from './shapes.ts'

/** A row of `GET /processes`: a Process without metadata, result_summary, tags and the tree's counts. */
export type ProcessSummary = Omit<Process, 'metadata' | 'result_summary' | 'tags' | 'root_id' | 'children' | 'error_stack'>

/** The list's views: scheduled (pending, due later), retrying (pending after a failed attempt), dead (failed, attempts exhausted). */
export const PROCESS_VIEWS = ['scheduled', 'retrying', 'dead'] as const
export type ProcessView = (typeof PROCESS_VIEWS)[number]

/** `GET /processes/{id}/events`: one row per status change or log line, ascending by id. */
export interface ProcessEvent {
  id: number
  status: ProcessStatus
  message: string | null
  created_at: string
  /** A fail's stack, as the worker sent it; null on every other event. */
  stack: string | null
}

/** `GET /processes/stats`. */
export interface Stats {
  workspace_id: number
  window: '1h' | '6h' | '24h' | '7d'
  bucket_seconds: number
  /** Every (type, status) of the workspace with its count: the status tabs. */
  counts: { type: string; status: ProcessStatus; count: number }[]
  /** As many as `GET /processes?view=` lists. */
  views: Record<ProcessView, number>
  buckets: {
    start: string
    created: number
    completed: number
    failed: number
    cancelled: number
    wait_p50_s: number | null
    wait_p95_s: number | null
    run_p50_s: number | null
    run_p95_s: number | null
  }[]
  /** A figure read STATS_MAX_ROWS rows and stopped: its counts are lower bounds, or the oldest buckets short. */
  truncated: boolean
}

/** A type's queue in `GET /queues`. */
export interface Queue {
  type: string
  pending: number
  /** Pending and due: claimable now, pause and rate aside. */
  due: number
  running: number
  paused: boolean
  paused_in: 'workspace' | 'all' | null
  oldest_pending_age_s: number | null
  finished_last_minute: number
  rate: { max: number; per_ms: number } | null
}

/** `GET /queues`. */
export interface QueuesPage {
  workspace_id: number
  queues: Queue[]
}

/** A schedule (`GET /schedules`). */
export interface Schedule {
  id: number
  workspace_id: number
  type: string
  cron: string
  timezone: string
  metadata: Record<string, unknown>
  priority: number
  max_attempts: number | null
  overlap: 'skip' | 'allow'
  catch_up: 'none' | 'latest' | 'all'
  enabled: boolean
  created_by: number | null
  created_at: string
  updated_at: string
  last_tick_at: string
  last_process_id: number | null
  next_runs: string[]
}

/** A lease in the workers page. */
export interface WorkerLease {
  process_id: number
  type: string
  progress: number
  message: string | null
  attempt: number
  started_at: string | null
  heartbeat_at: string | null
}

/** A worker in the workers page. */
export interface Worker {
  worker_id: string
  /** false: not connected anywhere, yet holding leases here. */
  connected: boolean
  connections: number
  instances: string[]
  /** What its claims ask for; null: any type. */
  types: string[] | null
  connected_at: string | null
  last_frame_at: string | null
  leases: WorkerLease[]
}

/** `GET /workers`. */
export interface WorkersPage {
  workspace_id: number
  workers: Worker[]
  pending: { type: string; count: number; covered: boolean }[]
}

export const BULK_ACTIONS = ['cancel', 'retry', 'discard'] as const
/** cancel: pending or running; retry: failed; discard: waiting_review (as the single-process routes allow). */
export type BulkAction = (typeof BULK_ACTIONS)[number]

/** What a bulk action selects: the list's filters. */
export interface BulkFilter {
  workspace_id?: number
  status?: ProcessStatus | ProcessStatus[] | string
  type?: string
  tag?: string | string[]
  parent_id?: number
  view?: ProcessView
  q?: string
}

/** `POST /processes/bulk`'s answer. */
export interface BulkResult {
  action: BulkAction
  workspace_id: number
  /** Processes the filter matches that the action applies to. */
  matched: number
  /** Of those, how many it changed (absent on a dry run). */
  changed?: number
  dry_run: boolean
}

/** GET /me: the caller and their workspaces. */
export interface Me {
  user: { id: number; email: string } | null
  workspaces: { id: number; name: string; role: string }[]
}

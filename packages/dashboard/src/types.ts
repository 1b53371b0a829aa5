// The shapes the console reads, all from @processes/client (which checks them against the server's schemas).
import type { Process, ProcessSummary, WorkersPage } from '@processes/client'

export type {
  BulkAction,
  BulkFilter,
  BulkResult,
  ConnectionState,
  Me,
  MonitorHandle,
  OutputChunk,
  Process,
  ProcessEvent,
  ProcessStatus,
  ProcessView,
  Queue,
  QueuesPage,
  Schedule,
  Stats,
} from '@processes/client'
export type Bucket = import('@processes/client').Stats['buckets'][number]
export type Workers = WorkersPage
/** A list row: the summary the list sends, or the whole process the workspace stream sends. */
export type Summary = ProcessSummary & Partial<Process>

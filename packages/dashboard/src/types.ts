// The shapes the console reads: the process types from @processes/client, the extension routes' types from
// the server's own schemas (type-only imports: nothing of the server reaches the browser bundle).
import type { StatsResponse } from '../../../src/processes/stats'
import type { QueueSummary } from '../../../src/queues/routes'
import type { Schedule as ScheduleSchema } from '../../../src/schedules/model'
import type { WorkersPage } from '../../../src/workers/routes'
import type { ProcessEvent as EventSchema, ProcessSummary } from '../../../src/processes/model'
import type { Process } from '@processes/client'

export type { ConnectionState, MonitorHandle, OutputChunk, Process, ProcessStatus } from '@processes/client'
export type Stats = typeof StatsResponse.static
export type Bucket = Stats['buckets'][number]
export type Queue = typeof QueueSummary.static
export type Schedule = ScheduleSchema
export type Workers = WorkersPage
export type ProcessEvent = typeof EventSchema.static
/** A list row: the summary the list sends, or the whole process the workspace stream sends. */
export type Summary = ProcessSummary & Partial<Process>

export interface Me {
  user: { id: number; email: string } | null
  workspaces: { id: number; name: string; role: string }[]
}

// A schedule as the API (and the CLI's list-schedules) shows it: its row, and its next runs from croner.
import type { Schedule } from './model'
import type { ScheduleRow } from './queries'
import { nextTicks } from './ticks'

/** Upcoming ticks shown with one schedule; a list shows fewer (croner takes ~0.2 ms a tick). */
export const NEXT_RUNS_ONE = 5
export const NEXT_RUNS_LIST = 3

export function toSchedule(row: ScheduleRow, nextRuns = NEXT_RUNS_ONE): Schedule {
  return {
    id: row.id,
    workspace_id: row.workspace_id,
    type: row.type,
    cron: row.cron,
    timezone: row.timezone,
    metadata: row.metadata,
    priority: row.priority,
    max_attempts: row.max_attempts,
    overlap: row.overlap,
    catch_up: row.catch_up,
    enabled: row.enabled,
    created_by: row.created_by,
    created_at: row.created_at,
    updated_at: row.updated_at,
    last_tick_at: row.last_tick_at,
    last_process_id: row.last_process_id,
    next_runs:
      row.enabled && row.next_tick_at !== null
        ? [Date.parse(row.next_tick_at), ...nextTicks(row.cron, row.timezone, Date.parse(row.next_tick_at), nextRuns - 1)].map((ms) =>
            new Date(ms).toISOString(),
          )
        : [],
  }
}

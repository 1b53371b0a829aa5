// The client's copy of the API's shapes against the server's own: the status list and the fields of a Process.
// When the server's process gains a field (the queue work adds `priority`, `run_at`, `max_attempts`), this test
// fails until packages/client/src/shapes.ts's Process and PROCESS_FIELDS carry it too — that is its purpose:
// the published client must not drift from the server it talks to.
import { describe, expect, it } from 'bun:test'
import {
  BULK_ACTIONS,
  type BulkFilter,
  type BulkResult,
  type Me,
  PROCESS_FIELDS,
  PROCESS_STATUSES,
  PROCESS_VIEWS,
  type ProcessEvent,
  type ProcessSummary,
  type QueuesPage,
  type Schedule,
  type Stats,
  type WorkersPage,
} from '@processes/client'
import {
  BULK_ACTIONS as SERVER_BULK_ACTIONS,
  type BulkFilter as ServerBulkFilter,
  BulkResult as ServerBulkResult,
  Process,
  ProcessEvent as ServerEvent,
  ProcessSummary as ServerSummary,
  VIEWS,
} from '../../src/processes/model'
import type { MeResponse } from '../../src/me'
import { StatsResponse } from '../../src/processes/stats'
import type { Queues } from '../../src/queues/routes'
import type { Schedule as ServerSchedule } from '../../src/schedules/model'
import type { WorkersResponse } from '../../src/workers/routes'
import { STATUSES } from '../../src/processes/states'

describe("the client's shapes", () => {
  it("lists the server's statuses, in its order", () => {
    expect([...PROCESS_STATUSES]).toEqual([...STATUSES])
  })

  it("names exactly the fields of the server's Process schema", () => {
    expect<string[]>([...PROCESS_FIELDS].sort()).toEqual(Object.keys(Process.properties).sort())
  })
})

// The console's shapes (packages/client/src/api-shapes.ts) against the server's schemas: each pair must be
// the same type both ways, or this file does not type-check (`npx tsc --noEmit`, run before every commit).
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false
interface Agreement {
  summary: Same<ProcessSummary, typeof ServerSummary.static>
  event: Same<ProcessEvent, typeof ServerEvent.static>
  stats: Same<Stats, typeof StatsResponse.static>
  queues: Same<QueuesPage, typeof Queues.static>
  schedule: Same<Schedule, typeof ServerSchedule.static>
  workers: Same<WorkersPage, typeof WorkersResponse.static>
  bulkFilter: Same<Required<BulkFilter>['view'], Required<typeof ServerBulkFilter.static>['view']>
  bulkResult: Same<BulkResult, typeof ServerBulkResult.static>
  me: Same<Me, typeof MeResponse.static>
}
const agree: Agreement = { summary: true, event: true, stats: true, queues: true, schedule: true, workers: true, bulkFilter: true, bulkResult: true, me: true }

describe("the console's shapes", () => {
  it("name exactly the fields of the server's schemas", () => {
    expect(Object.values(agree).every((v) => v === true)).toBe(true)
    expect([...PROCESS_VIEWS]).toEqual([...VIEWS])
    expect([...BULK_ACTIONS]).toEqual([...SERVER_BULK_ACTIONS])
    const keys = (o: { properties: object }) => Object.keys(o.properties).sort()
    const pairs: [string[], { properties: object }][] = [
      [
        [
          'attempts',
          'created_at',
          'created_by',
          'error',
          'finished_at',
          'id',
          'max_attempts',
          'message',
          'parent_id',
          'priority',
          'progress',
          'run_at',
          'started_at',
          'status',
          'type',
          'updated_at',
          'version',
          'worker_id',
          'workspace_id',
        ],
        ServerSummary,
      ],
      [['created_at', 'id', 'message', 'stack', 'status'], ServerEvent],
      [['action', 'changed', 'dry_run', 'matched', 'workspace_id'], ServerBulkResult],
      [['dead', 'retrying', 'scheduled'], StatsResponse.properties.views],
    ]
    for (const [expected, schema] of pairs) expect(keys(schema)).toEqual(expected)
  })
})

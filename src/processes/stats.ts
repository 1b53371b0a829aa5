// Figures computed in SQL from the processes themselves (created_at, started_at, finished_at): queue depth for
// /metrics, and per-workspace counts and time buckets for the dashboard's tabs and charts (GET /processes/stats).
import { Elysia, t } from 'elysia'
import { activeWorkspace, authPlugin } from '../auth/plugin'
import { documented } from '../ops/docs'
import type { Services } from '../wiring'
import { ErrorSchema, IdString, StatusSchema, TagFilter, tagsOf } from './model'
import { countByTypeAndStatus, countViews, timeBuckets } from './queries/stats'

/** The windows a dashboard may ask for, and the bucket each is drawn in. */
export const WINDOWS = { '1h': [3600, 60], '6h': [21_600, 600], '24h': [86_400, 3600], '7d': [604_800, 21_600] } as const
export type StatsWindow = keyof typeof WINDOWS
const WINDOW_NAMES = ['1h', '6h', '24h', '7d'] as const satisfies readonly StatsWindow[]
/** What `GET /processes/stats` without `window` answers (README: API). */
export const DEFAULT_WINDOW: StatsWindow = '24h'

const Seconds = t.Union([t.Number(), t.Null()])
export const StatsResponse = t.Object({
  workspace_id: t.Integer(),
  window: t.UnionEnum(WINDOW_NAMES),
  bucket_seconds: t.Integer(),
  counts: t.Array(t.Object({ type: t.String(), status: StatusSchema, count: t.Integer() })),
  /** The list's views (extension): as many as `GET /processes?view=` lists. */
  views: t.Object({ scheduled: t.Integer(), retrying: t.Integer(), dead: t.Integer() }),
  /** A figure read STATS_MAX_ROWS rows and stopped: that status's counts are lower bounds, or the oldest buckets short. */
  truncated: t.Boolean(),
  buckets: t.Array(
    t.Object({
      start: t.String({ format: 'date-time' }),
      created: t.Integer(),
      completed: t.Integer(),
      failed: t.Integer(),
      cancelled: t.Integer(),
      wait_p50_s: Seconds,
      wait_p95_s: Seconds,
      run_p50_s: Seconds,
      run_p95_s: Seconds,
    }),
  ),
})

export function stats(s: Services) {
  return new Elysia({ prefix: '/processes' }).use(authPlugin(s)).get(
    '/stats',
    async ({ query, principal, state }) => {
      const workspaceId = activeWorkspace(principal, state, query.workspace_id === undefined ? undefined : Number(query.workspace_id))
      const window = query.window ?? DEFAULT_WINDOW
      const [windowS, bucketS] = WINDOWS[window]
      const tags = tagsOf(query.tag)
      // `buckets=false`: the counts alone (the dashboard's tabs, refreshed as statuses change), one cheap query.
      const maxRows = s.config.STATS_MAX_ROWS
      const [counts, views, time] = await Promise.all([
        countByTypeAndStatus(s.sql, workspaceId, maxRows, tags),
        countViews(s.sql, workspaceId, tags),
        query.buckets === 'false' ? { buckets: [], truncated: false } : timeBuckets(s.sql, workspaceId, windowS, bucketS, maxRows, tags),
      ])
      const truncated = counts.truncated || time.truncated
      return { workspace_id: workspaceId, window, bucket_seconds: bucketS, counts: counts.counts, views, buckets: time.buckets, truncated }
    },
    {
      query: t.Object(
        {
          workspace_id: t.Optional(IdString()),
          // The default stated here: without one Elysia fills in the union's first value (1h).
          window: t.Optional(t.UnionEnum(WINDOW_NAMES, { default: DEFAULT_WINDOW })),
          buckets: t.Optional(t.UnionEnum(['true', 'false'])),
          tag: t.Optional(TagFilter),
        },
        { additionalProperties: true },
      ),
      detail: {
        summary: 'Counts by type and status, and throughput / wait / run time per bucket (extension; the dashboard)',
        tags: ['processes'],
        responses: documented({
          200: ['OK', StatsResponse],
          401: ['unauthenticated', ErrorSchema],
          403: ['forbidden', ErrorSchema],
          422: ['invalid_request', ErrorSchema],
          500: ['internal', ErrorSchema],
          503: ['unavailable', ErrorSchema],
        }),
      },
    },
  )
}

// Reading processes: the list, one process (ETag / If-None-Match), its event log. A running process shows its
// newest live state this instance knows (src/processes/reader.ts), in the list too.
import { Elysia, t } from 'elysia'
import type { Principal } from '../../auth/authenticator'
import { activeWorkspace, authPlugin } from '../../auth/plugin'
import { JSON_CONTENT_TYPE, notFound } from '../../errors'
import type { RequestState } from '../../request-state'
import type { Services } from '../../wiring'
import { ChildrenQuery, EventsQuery, IdParams, ListQuery, OutputChunk, OutputQuery, Process, ProcessEvent, ProcessSummary, tagsOf } from '../model'
import { listOutput } from '../queries/output'
import { requireCovered } from '../scope'
import { listEvents, listProcesses } from '../queries/reads'
import { listChildren } from '../queries/trees'
import { errors, responses } from './docs'

/** `"<version>"`; If-None-Match may list several, weak or strong, or `*`. */
const etagOf = (version: number) => `"${version}"`
function matchesEtag(header: string, version: number): boolean {
  const tag = etagOf(version)
  return header.split(',').some((part) => {
    const value = part.trim()
    return value === '*' || value === tag || value === `W/${tag}`
  })
}

/** `Link: <this URL with param=value>; rel="next"`: the next page of a cursor-paged list. */
function linkNext(request: Request, set: { headers: Record<string, unknown> }, param: string, value: number) {
  const url = new URL(request.url)
  url.searchParams.set(param, String(value))
  set.headers.link = `<${url.pathname}${url.search}>; rel="next"`
}

export function processReads(s: Services) {
  /** A process the caller may see (else 404), its workspace named for the audit row. */
  const visible = async (id: number, principal: Principal, state: RequestState) => {
    const found = await s.reader.version(id, principal.workspaceIds)
    if (found === null) throw notFound('Process not found')
    state.workspaceId = found.workspace_id
  }
  return new Elysia({ prefix: '/processes' })
    .use(authPlugin(s))
    .get(
      '',
      async ({ query, principal, state, request, set }) => {
        const workspaceId = activeWorkspace(principal, state, query.workspace_id)
        const limit = query.limit ?? 50
        const filter = {
          workspaceId,
          statuses: query.status?.split(','),
          type: query.type,
          tags: tagsOf(query.tag),
          scope: principal.scope,
          view: query.view,
          q: query.q,
          before: query.before,
          limit,
        }
        const { rows, next } = await listProcesses(s.sql, { ...filter, parentId: query.parent_id })
        if (next !== null) linkNext(request, set, 'before', next)
        // A running process's newest live state, where this instance knows one (src/processes/reader.ts).
        return rows.map((row) => {
          const live = s.reader.liveState(row.id)
          if (!live || live.version <= row.version) return row
          const { metadata: _m, result_summary: _r, tags: _t, ...summary } = live
          return summary
        })
      },
      {
        query: ListQuery,
        detail: {
          summary:
            'List processes of the active workspace, newest first; `view` (scheduled, retrying, dead) and `q` (search, within the newest SEARCH_SCAN_MAX rows of the other filters: a page may be short and still have a Link next) are extensions',
          tags: ['processes'],
          responses: responses({ 200: t.Array(ProcessSummary), ...errors }),
        },
      },
    )
    .get(
      '/:id',
      async ({ params: { id }, principal, state, request }) => {
        await requireCovered(s.reader, principal, id)
        const ifNoneMatch = request.headers.get('if-none-match')
        if (ifNoneMatch) {
          // The cheap path for 2-second pollers: compare versions before reading the whole row.
          const current = await s.reader.version(id, principal.workspaceIds)
          if (current === null) throw notFound('Process not found')
          if (matchesEtag(ifNoneMatch, current.version)) {
            state.workspaceId = current.workspace_id
            // A Response of our own, as for the 200: Elysia's own (from `set`) costs more than the read saves.
            return new Response(null, { status: 304, headers: { etag: etagOf(current.version) } })
          }
        }
        const process = await s.reader.findText(id, principal.workspaceIds)
        if (!process) throw notFound('Process not found')
        state.workspaceId = process.workspace_id
        return new Response(process.json, {
          headers: { 'content-type': JSON_CONTENT_TYPE, etag: etagOf(process.version), 'cache-control': 'no-cache' },
        })
      },
      {
        params: IdParams,
        detail: {
          summary: 'Get one process with its full state (ETag / If-None-Match)',
          tags: ['processes'],
          responses: responses({ 200: Process, 304: null, ...errors }),
        },
      },
    )
    .get(
      '/:id/children',
      async ({ params: { id }, query, principal, state, request, set }) => {
        await visible(id, principal, state)
        const limit = query.limit ?? 100
        const { rows, more } = await listChildren(s.sql, { parentId: id, statuses: query.status?.split(','), after: query.after, limit })
        if (more) linkNext(request, set, 'after', rows[rows.length - 1]!.id)
        return rows
      },
      {
        params: IdParams,
        query: ChildrenQuery,
        detail: {
          summary: "A process's children, oldest first (extension); status filter, `after` for the next page (Link header)",
          tags: ['processes'],
          responses: responses({ 200: t.Array(Process), ...errors }),
        },
      },
    )
    .get(
      '/:id/events',
      async ({ params: { id }, query, principal, state }) => {
        await requireCovered(s.reader, principal, id)
        await visible(id, principal, state)
        return listEvents(s.sql, id, query.after ?? 0, query.limit ?? 1000)
      },
      {
        params: IdParams,
        query: EventsQuery,
        detail: { summary: "A process's event log, ascending by id", tags: ['processes'], responses: responses({ 200: t.Array(ProcessEvent), ...errors }) },
      },
    )
    .get(
      '/:id/output',
      async ({ params: { id }, query, principal, state, request, set }) => {
        await requireCovered(s.reader, principal, id)
        await visible(id, principal, state)
        const limit = query.limit ?? 1000
        const chunks = await listOutput(s.sql, id, query.after ?? 0, limit)
        if (chunks.length === limit) linkNext(request, set, 'after', chunks[chunks.length - 1]!.seq)
        return chunks
      },
      {
        params: IdParams,
        query: OutputQuery,
        detail: {
          summary: "A process's live output, ascending by seq (extension); `after` pages on",
          tags: ['processes'],
          responses: responses({ 200: t.Array(OutputChunk), ...errors }),
        },
      },
    )
}

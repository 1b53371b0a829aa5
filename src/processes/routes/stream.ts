// The two SSE routes: one process (README: SSE stream) and a whole workspace.
import { Elysia } from 'elysia'
import type { Principal } from '../../auth/authenticator'
import { activeWorkspace, authPlugin } from '../../auth/plugin'
import { HttpError, notFound, unavailable } from '../../errors'
import type { Services } from '../../wiring'
import { newer } from '../live'
import { IdParams, ProcessStreamQuery, StreamQuery, tagsOf } from '../model'
import { openProcessStream, parseEventCursor } from '../process-stream'
import { listOutput } from '../queries/output'
import { requireCovered } from '../scope'
import { listActive } from '../queries/reads'
import { openWorkspaceStream } from '../workspace-stream'
import { errors, EVENT_STREAM, responses } from './docs'

export function processStreams(s: Services) {
  const streamSettings = {
    maxMs: s.config.SSE_MAX_MS,
    keepaliveMs: s.config.SSE_KEEPALIVE_MS,
    retryMs: s.config.SSE_RETRY_MS,
    liveRecheckMs: 2 * s.config.PROGRESS_PERSIST_MS + 100,
  }
  const refuseWhileDraining = () => {
    if (s.draining.value) throw unavailable('Server is shutting down; reconnect')
  }
  /**
   * A stream counts against its credential's cap (MAX_STREAMS_PER_TOKEN) from now on, and is closed when the
   * credential is revoked or expires (auth/revocation.ts).
   */
  const admitStream = (principal: Principal, workspace: () => number | null) => {
    if (principal.scope) return admitPublicStream(principal.scope.tokenId)
    // Counted per API token, its browser sessions' streams included: six sessions of one token share one cap.
    const cap = s.config.MAX_STREAMS_PER_TOKEN
    if (cap > 0 && s.credentials.count('api', principal.tokenId) >= cap) {
      throw new HttpError(429, 'rate_limited', `At most ${cap} open streams per token on this instance`, { limit: cap }, { 'Retry-After': '1' })
    }
    let close = () => {}
    const closeOnce = () => close()
    const untrackToken = s.credentials.track('api', principal.tokenId, closeOnce)
    // A session's stream also ends with the session (DELETE /auth/session, its expiry), not only with its token.
    const untrackSession = principal.sessionId !== null ? s.credentials.track('session', principal.sessionId, closeOnce) : () => {}
    // And when its user is taken out of the stream's workspace (cli remove-member).
    const untrackMember = s.credentials.trackMember(principal.userId, workspace, closeOnce)
    // At the credential's expiry exactly, not at the next credential check (up to AUTH_CACHE_MS / 2 later).
    const expiresInMs = principal.expiresAt === null ? null : principal.expiresAt - Date.now()
    const expiry = expiresInMs !== null && expiresInMs < 2 ** 31 - 1 ? setTimeout(closeOnce, Math.max(0, expiresInMs)) : null
    return (closeStream: () => void) => {
      close = closeStream
      return () => {
        if (expiry) clearTimeout(expiry)
        untrackToken()
        untrackSession()
        untrackMember()
      }
    }
  }
  /** A public token's stream: capped and closed on revocation or expiry by its own watch (auth/public-tokens.ts). */
  const admitPublicStream = (tokenId: number) => {
    const cap = s.config.MAX_STREAMS_PER_TOKEN
    if (cap > 0 && s.publicTokens.count(tokenId) >= cap) {
      throw new HttpError(429, 'rate_limited', `At most ${cap} open streams per token on this instance`, { limit: cap }, { 'Retry-After': '1' })
    }
    let close = () => {}
    const untrack = s.publicTokens.track(tokenId, () => close())
    return (closeStream: () => void) => {
      close = closeStream
      return untrack
    }
  }
  return new Elysia({ prefix: '/processes' })
    .use(authPlugin(s))
    .get(
      '/stream',
      async ({ query, principal, state }) => {
        refuseWhileDraining()
        const workspaceId = activeWorkspace(principal, state, query.workspace_id)
        const statuses = query.status?.split(',')
        const tags = tagsOf(query.tag)
        const register = admitStream(principal, () => workspaceId)
        s.metrics.counters.sse_connects++
        return openWorkspaceStream({
          register,
          hub: s.hub,
          settings: streamSettings,
          workspaceId,
          statuses,
          type: query.type,
          tags,
          scope: principal.scope,
          rootId: query.root_id,
          snapshotMax: s.config.WORKSPACE_STREAM_SNAPSHOT_MAX || undefined,
          // Each row as the newest state this instance knows of it (a running process's live state).
          readPage: async (after, limit) =>
            (await listActive(s.sql, { workspaceId, statuses, type: query.type, tags, scope: principal.scope, rootId: query.root_id, after, limit })).map(
              (row) => newer(row, s.reader.liveState(row.id))!,
            ),
        })
      },
      {
        query: StreamQuery,
        detail: { summary: 'One SSE stream for a whole workspace (extension)', tags: ['streams'], responses: responses({ 200: EVENT_STREAM, ...errors }) },
      },
    )
    .get(
      '/:id/stream',
      async ({ params: { id }, query, principal, state, request }) => {
        refuseWhileDraining()
        await requireCovered(s.reader, principal, id)
        // The process's workspace, known at its first read.
        let workspaceId: number | null = null
        const register = admitStream(principal, () => workspaceId)
        s.metrics.counters.sse_connects++
        const cursor = parseEventCursor(request.headers.get('last-event-id'), query.last_event_id)
        const response = await openProcessStream({
          register,
          hub: s.hub,
          settings: streamSettings,
          id,
          lastEventId: cursor?.version ?? null,
          lastSeq: cursor?.seq ?? 0,
          // `output=false`: states only (a client that shows no output need not be sent it).
          output:
            query.output === 'false'
              ? undefined
              : {
                  maxQueuedBytes: 2 * s.config.OUTPUT_MAX_BYTES + 64 * 1024,
                  recheckMs: 3 * s.config.OUTPUT_FLUSH_MS + 50,
                  read: async (after, before, limit) =>
                    (await listOutput(s.sql, id, after, limit, before)).map((c) => ({
                      seq: c.seq,
                      text: `{"process_id":${id},"seq":${c.seq},"chunk":${JSON.stringify(c.chunk)}}`,
                    })),
                },
          read: async () => {
            const process = await s.reader.find(id, principal.workspaceIds)
            if (process) state.workspaceId = workspaceId = process.workspace_id
            return process
          },
        })
        if (!response) throw notFound('Process not found')
        return response
      },
      {
        params: IdParams,
        query: ProcessStreamQuery,
        detail: {
          summary: 'SSE stream of one process: 25-second windows, `event: done` at the end',
          tags: ['streams'],
          responses: responses({ 200: EVENT_STREAM, ...errors }),
        },
      },
    )
}

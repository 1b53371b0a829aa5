// children: a page of the held process's children (status, progress, result_summary …), oldest
// first, for a handler that aggregates them (a finalize run: ctx.children). Fenced like every frame on a process.
import { findState } from '../../processes/queries/reads'
import { listChildren } from '../../processes/queries/trees'
import { FrameError, fence, type Handler, refusalMessage } from './context'

export const children: Handler<'children'> = async (g, ws, workerId, frame) => {
  const lease = fence(g, ws, workerId, frame.process_id, frame.attempt)
  if (typeof lease === 'string') throw new FrameError(lease, refusalMessage(lease, 'children'))
  if (!lease) {
    const state = await findState(g.s.sql, frame.process_id)
    if (!state) throw new FrameError('not_found', refusalMessage('not_found', 'children'))
    if (state.worker_id !== workerId || (frame.attempt !== undefined && state.attempts !== frame.attempt))
      throw new FrameError('not_owner', refusalMessage('not_owner', 'children'))
  }
  const limit = frame.limit ?? 100
  const page = await listChildren(g.s.sql, { parentId: frame.process_id, statuses: frame.status?.split(','), after: frame.after, limit })
  return {
    op: 'ack',
    children: page.rows.map(({ id, type, status, progress, message, error, attempts, metadata, result_summary, finished_at }) => ({
      id,
      type,
      status,
      progress,
      message,
      error,
      attempts,
      metadata,
      result_summary,
      finished_at,
    })),
    next_after: page.more ? page.rows[page.rows.length - 1]!.id : null,
  }
}

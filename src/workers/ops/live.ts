// progress and heartbeat: live state (README: Worker protocol, "Live state"). Fenced against this
// instance's own leases in memory and acked at once; the state goes to the hub at the end of the turn and to
// Postgres behind it (src/workers/write-behind.ts). Only a frame about a process not held here reads the
// database, to say why it is refused.
import { inJsonbOrder, mergePatch } from '../../processes/merge-patch'
import type { Process } from '../../processes/model'
import { MAX_RESULT_BYTES } from '../model'
import { FrameError, fence, type Handler, refuse, refusalMessage } from './context'

export const progress: Handler<'progress'> = (g, ws, workerId, frame) => {
  g.s.metrics.counters.progress_frames++
  const lease = fence(g, ws, workerId, frame.process_id, frame.attempt)
  if (lease === null) return refuse(g, ws, workerId, frame.process_id, frame.attempt, 'progress')
  if (typeof lease === 'string') throw new FrameError(lease, refusalMessage(lease, 'progress'))
  const state = g.held.accept(lease, { progress: frame.progress, message: frame.message })
  g.publishSoon()
  return { op: 'ack', version: state.version }
}

export const heartbeat: Handler<'heartbeat'> = (g, ws, workerId, frame) => {
  const lease = fence(g, ws, workerId, frame.process_id, frame.attempt)
  if (lease === null) return refuse(g, ws, workerId, frame.process_id, frame.attempt, 'heartbeat')
  if (typeof lease === 'string') throw new FrameError(lease, refusalMessage(lease, 'heartbeat'))
  g.held.beat(lease)
  g.publishSoon()
  return { op: 'ack' }
}

/**
 * update: a JSON merge patch (RFC 7386) into result_summary, live state as progress is (fenced in memory,
 * acked on accept, fanned out, written behind with the progress, newest wins). A result over MAX_RESULT_BYTES
 * after the merge is refused whole (result_too_large); a terminal frame's result_summary supersedes it.
 */
export const update: Handler<'update'> = (g, ws, workerId, frame) => {
  const lease = fence(g, ws, workerId, frame.process_id, frame.attempt)
  if (lease === null) return refuse(g, ws, workerId, frame.process_id, frame.attempt, 'update')
  if (typeof lease === 'string') throw new FrameError(lease, refusalMessage(lease, 'update'))
  const merged = inJsonbOrder(mergePatch(lease.state.result_summary, frame.result_summary)) as Process['result_summary']
  const bytes = Buffer.byteLength(JSON.stringify(merged))
  if (bytes > MAX_RESULT_BYTES) throw new FrameError('result_too_large', `result_summary would be ${bytes} bytes after the merge; at most ${MAX_RESULT_BYTES}`)
  const state = g.held.accept(lease, { result_summary: merged, message: frame.message })
  g.publishSoon()
  return { op: 'ack', version: state.version }
}

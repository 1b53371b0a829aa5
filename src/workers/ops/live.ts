// progress and heartbeat: live state (README: Worker protocol, "Live state"). Fenced against this
// instance's own leases in memory and acked at once; the state goes to the hub at the end of the turn and to
// Postgres behind it (src/workers/write-behind.ts). Only a frame about a process not held here reads the
// database, to say why it is refused.
import { FrameError, fence, type Handler, refuse, refusalMessage } from './context'

export const progress: Handler<'progress'> = (g, ws, workerId, frame) => {
  g.s.metrics.counters.progress_frames++
  const lease = fence(g, ws, workerId, frame.process_id, frame.attempt)
  if (lease === null) return refuse(g, ws, workerId, frame.process_id, frame.attempt, 'progress')
  if (typeof lease === 'string') throw new FrameError(lease, refusalMessage(lease, 'progress'))
  const state = g.held.accept(lease, frame.progress, frame.message)
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

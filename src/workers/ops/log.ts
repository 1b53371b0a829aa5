// log: a line in the process's event log, status unchanged. Events are records: committed, then acked. From
// the lease holder the commit carries the live progress too and follows its live version.
import { appendLog, logEventsFull } from '../../processes/queries/reports'
import { holderVersion } from '../held'
import { FrameError, fence, type Handler, refuse, refusalMessage } from './context'

export const log: Handler<'log'> = async (g, ws, workerId, frame) => {
  const lease = fence(g, ws, workerId, frame.process_id, frame.attempt)
  if (typeof lease === 'string') throw new FrameError(lease, refusalMessage(lease, 'log'))
  const changed = await appendLog(g.s.sql, frame.process_id, {
    workerId,
    attempt: frame.attempt,
    message: frame.message,
    tokenId: ws.data.tokenId,
    holder: lease ? { version: holderVersion(lease), base: lease.base, progress: lease.state.progress, result_summary: lease.state.result_summary } : undefined,
    maxEvents: g.s.config.MAX_LOG_EVENTS_PER_PROCESS,
  })
  if (!changed) {
    const max = g.s.config.MAX_LOG_EVENTS_PER_PROCESS
    // Only the lease holder hears why (anyone else gets the usual refusal, with no hint).
    if (lease && (await logEventsFull(g.s.sql, frame.process_id, max)))
      throw new FrameError(
        'invalid_message',
        `This process has ${max} log lines, the most one process may have (MAX_LOG_EVENTS_PER_PROCESS); progress, heartbeat and complete still work`,
      )
    return refuse(g, ws, workerId, frame.process_id, frame.attempt, 'log')
  }
  if (lease && g.held.get(lease.id) === lease) g.held.committed(lease, changed)
  g.s.hub.publish(changed)
  return { op: 'ack', version: changed.version }
}

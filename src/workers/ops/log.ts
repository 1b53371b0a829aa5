// log: a line in the process's event log, status unchanged. Events are records: committed, then acked. From
// the lease holder the commit carries the live progress too and follows its live version.
import { appendLog } from '../../processes/queries/reports'
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
  })
  if (!changed) return refuse(g, ws, workerId, frame.process_id, frame.attempt, 'log')
  if (lease && g.held.get(lease.id) === lease) g.held.committed(lease, changed)
  g.s.hub.publish(changed)
  return { op: 'ack', version: changed.version }
}

// output: a chunk of live output (README: Live output). Live state: fenced against this instance's leases in
// memory, acked once accepted (its seq in the ack), fanned out at the end of the turn and appended to
// process_output behind it (src/workers/output-behind.ts). Past OUTPUT_MAX_BYTES of the process the chunk is
// refused with output_too_large and the process goes on. Only a lease's first chunk reads the database (to
// number on from what the table holds).
import { inJsonbOrder } from '../../processes/merge-patch'
import { FrameError, fence, type Handler, refuse, refusalMessage } from './context'

export const output: Handler<'output'> = (g, ws, workerId, frame) => {
  g.s.metrics.counters.output_frames++
  const lease = fence(g, ws, workerId, frame.process_id, frame.attempt)
  if (lease === null) return refuse(g, ws, workerId, frame.process_id, frame.attempt, 'output')
  if (typeof lease === 'string') throw new FrameError(lease, refusalMessage(lease, 'output'))
  if (g.outputFull) throw new FrameError('rate_limited', 'live output is not being written fast enough; retry shortly')
  // An object chunk in jsonb's key order: the stream shows it as the table gives it back.
  const chunk = typeof frame.chunk === 'object' ? inJsonbOrder(frame.chunk) : frame.chunk
  const text = JSON.stringify(chunk)
  const bytes = Buffer.byteLength(text)
  const max = g.s.config.OUTPUT_MAX_BYTES
  const take = (totals: { seq: number; bytes: number }) => {
    if (g.held.get(lease.id) !== lease || lease.moved) throw new FrameError('not_owner', refusalMessage('not_owner', 'output'))
    if (totals.bytes + bytes > max)
      throw new FrameError('output_too_large', `the process's output would pass OUTPUT_MAX_BYTES (${max} bytes); chunk refused, the process goes on`)
    totals.seq++
    totals.bytes += bytes
    g.acceptOutput(lease, totals.seq, text, bytes)
    return { op: 'ack', seq: totals.seq }
  }
  if (lease.output) return take(lease.output)
  return g.outputOf(lease).then(take)
}

// hello: the socket acts as a stable worker id, whose leases it keeps across reconnects. The worker's running
// processes become this instance's leases (a takeover: src/processes/live.ts); those already held here, by
// another socket of the same worker, stay as they are.
import { leasesOf, takeOverLeases } from '../../processes/queries/reports'
import { FrameError, type Handler } from './context'

export const hello: Handler<'hello'> = async (g, ws, workerId, frame) => {
  const id = frame.worker_id
  // Switched at once: frames sent right after the hello act as the new id.
  if (id !== workerId) g.rename(ws, workerId, id)
  // Leases belong to the token that took them: another token's hello with this worker id gets none, and the
  // socket goes back to the id it had.
  const leases = await leasesOf(g.s.sql, id)
  if (leases.some((l) => l.worker_token_id !== null && Number(l.worker_token_id) !== ws.data.tokenId)) {
    if (ws.data.workerId === id && id !== workerId) g.rename(ws, id, workerId)
    throw new FrameError('not_owner', 'this worker id holds leases of another worker token')
  }
  // Those held here already (by another socket of this worker) stay as they are; the rest are taken over.
  const here = new Set(
    g.held
      .ofWorker(id)
      .filter((lease) => lease.tokenId === ws.data.tokenId && !lease.moved)
      .map((lease) => lease.id),
  )
  const taken = await takeOverLeases(
    g.s.sql,
    id,
    ws.data.tokenId,
    leases.map((l) => Number(l.id)).filter((n) => !here.has(n)),
  )
  for (const { state, base } of taken) await g.hold(ws, id, state, base)
  const processes = [...here, ...taken.map((t) => t.state.id)].sort((a, b) => a - b)
  return { op: 'ack', worker_id: id, processes }
}

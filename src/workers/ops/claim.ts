// claim and start: a process becomes running, leased to this socket's worker and held by this instance.
import { getProcesses, notDueUntil } from '../../processes/queries/reads'
import { transitionProcess, workerTransition } from '../../processes/queries/transitions'
import { FrameError, type Handler, refusalMessage } from './context'

export const claim: Handler<'claim'> = async (g, ws, workerId, frame) => {
  const processes = await g.claimFor(ws, workerId, frame)
  // `process` is the first, for workers that ask for one at a time (the protocol's original reply).
  return { op: 'claimed', process: processes[0] ?? null, processes }
}

export const start: Handler<'start'> = async (g, ws, workerId, frame) => {
  const { sql, hub } = g.s
  const changed = await transitionProcess(sql, frame.process_id, workerTransition(sql, 'start', workerId, undefined, {}, ws.data.token))
  if (!changed) {
    const code = await g.refusal(ws, frame.process_id, workerId, undefined, 'running')
    // Visible to this worker, pending, and not due yet: say so rather than "not the owner".
    const dueAt = code === 'not_found' ? null : await notDueUntil(sql, frame.process_id)
    if (dueAt) throw new FrameError('invalid_transition', `This process is not due until ${dueAt} (its run_at); start it then, or claim it`)
    if (code !== 'ack') throw new FrameError(code, refusalMessage(code, 'start'))
    const [current] = await getProcesses(sql, [frame.process_id])
    return { op: 'ack', process: current }
  }
  await g.hold(ws, workerId, changed)
  hub.publish(changed)
  return { op: 'ack', process: changed }
}

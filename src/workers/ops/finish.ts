// complete and fail: the worker's part ends. Terminal frames are records: committed (group-committed with the
// turn's other terminal frames, src/workers/finish.ts), then acked. From the lease holder the commit follows
// its live version and supersedes what the write-behind has queued: a complete writes progress 100, a fail
// the last accepted progress.
import { type Process, storableStack } from '../../processes/model'
import type { Status } from '../../processes/states'
import type { FinishClaim } from '../finish'
import { holderVersion } from '../held'
import { FrameError, fence, type FrameOf, type GatewayOps, type Reply, refusalMessage, type Socket } from './context'

export async function finish(g: GatewayOps, ws: Socket, workerId: string, frame: FrameOf<'complete' | 'fail'>): Promise<Reply> {
  const { hub, queue } = g.s
  const lease = fence(g, ws, workerId, frame.process_id, frame.attempt)
  if (typeof lease === 'string') throw new FrameError(lease, refusalMessage(lease, frame.op))
  // The process's output is all in the table before its terminal state commits (and reaches any stream).
  if (lease) await g.outputDrained(lease.id)
  const op = frame.op === 'fail' ? 'fail' : frame.review ? 'review' : 'complete'
  const outcome: Status = op === 'fail' ? 'failed' : op === 'review' ? 'waiting_review' : 'completed'
  const common = {
    id: frame.process_id,
    worker_id: workerId,
    attempt: frame.attempt ?? null,
    worker_token_id: ws.data.tokenId,
    version: lease ? holderVersion(lease) : null,
    base: lease ? lease.base : null,
  }
  // A claim-next that does not wait is taken in the change's own transaction; one that waits, after it.
  const types = frame.claim?.types && frame.claim.types.length > 0 ? frame.claim.types : null
  const claimNow = frame.claim && !((frame.claim.wait_ms ?? 0) > 0)
  const claim: FinishClaim | undefined = claimNow
    ? {
        key: `${ws.data.connId} ${workerId} ${JSON.stringify(types)}`,
        workerId,
        types,
        max: frame.claim!.max ?? 1,
        token: ws.data.token,
        signal: ws.data.closed.signal,
      }
    : undefined
  const done = await g.finisher.submit(
    frame.op === 'fail'
      ? {
          op: 'fail',
          ...common,
          error: frame.error,
          stack: frame.stack === undefined ? null : storableStack(frame.stack),
          progress: lease ? lease.state.progress : null,
          // The holder's live result (update frames) is kept by the fail, as its progress is.
          ...(lease ? { result: true, result_summary: lease.state.result_summary } : {}),
        }
      : {
          op: 'complete',
          ...common,
          review: op === 'review',
          // The frame's result supersedes the live one (update frames); without one the live result is kept.
          ...(frame.result_summary !== undefined && frame.result_summary !== null
            ? { result_summary: frame.result_summary }
            : lease && lease.state.result_summary !== null
              ? { result_summary: lease.state.result_summary }
              : {}),
        },
    claim,
  )
  const changed = done.changed
  if (!changed) {
    // A repeated terminal frame for the outcome already committed is acked again, not applied twice.
    const code = await g.refusal(ws, frame.process_id, workerId, frame.attempt, outcome)
    if (code !== 'ack') throw new FrameError(code, refusalMessage(code, frame.op))
    return { op: 'ack', repeated: true, ...(frame.claim ? { processes: await g.claimFor(ws, workerId, frame.claim) } : {}) }
  }
  g.release(changed.id)
  if (changed.status === 'pending') hub.announceWork(changed.type, 1, Date.parse(changed.run_at))
  else if (queue.capsAffect(changed.type)) hub.announceWork(changed.type)
  return afterFinish(g, ws, workerId, frame, changed, done.claimed)
}

async function afterFinish(
  g: GatewayOps,
  ws: Socket,
  workerId: string,
  frame: FrameOf<'complete' | 'fail'>,
  changed: Process,
  claimed: Process[] | null,
): Promise<Reply> {
  if (claimed) {
    ws.data.types = frame.claim?.types && frame.claim.types.length > 0 ? frame.claim.types : null
    for (const process of claimed) await g.hold(ws, workerId, process)
    return { op: 'ack', version: changed.version, processes: claimed }
  }
  // Complete-and-claim-next: the claim runs after the terminal change committed.
  if (frame.claim) return { op: 'ack', version: changed.version, processes: await g.claimFor(ws, workerId, frame.claim) }
  return { op: 'ack', version: changed.version }
}

// spawn: children of the process this worker holds, in one transaction, fenced like every frame
// on a process (the lease holder, its token, the attempt) and checked again on the locked row, so a spawn that
// races a cancel either lands before it (and is cancelled with it) or is refused with `cancelled`. A scoped
// worker token spawns only types it may claim, into the workspace of the process it holds.
import type { NewProcess } from '../../processes/queries/create'
import { toProcess } from '../../processes/queries/rows'
import { insertProcessRows } from '../../processes/queries/create'
import { getProcesses } from '../../processes/queries/reads'
import { lockParent } from '../../processes/queries/trees'
import { MAX_DEPTH, unstorableJson } from '../../processes/model'
import { announceNew } from '../../processes/service'
import { FrameError, fence, type Handler, refusalMessage } from './context'

export const spawn: Handler<'spawn'> = async (g, ws, workerId, frame) => {
  const lease = fence(g, ws, workerId, frame.process_id, frame.attempt)
  if (typeof lease === 'string') throw new FrameError(lease, refusalMessage(lease, 'spawn'))
  const scope = ws.data.token
  const items: NewProcess[] = frame.children.map((c, i) => {
    if (scope.types && !scope.types.includes(c.type))
      throw new FrameError('invalid_message', `children/${i}: type ${c.type} is outside this worker token's types`)
    const unstorable = unstorableJson(c.metadata)
    if (unstorable) throw new FrameError('invalid_message', `children/${i}/metadata: ${unstorable}`)
    if (c.run_at !== undefined && c.delay_ms !== undefined) throw new FrameError('invalid_message', `children/${i}: give run_at or delay_ms, not both`)
    return {
      type: c.type,
      metadata: c.metadata ?? {},
      priority: c.priority ?? 0,
      max_attempts: g.s.queue.maxAttemptsFor(c.type, c.max_attempts),
      run_at: c.run_at === undefined ? null : new Date(Date.parse(c.run_at)).toISOString(),
      delay_ms: c.delay_ms ?? null,
      unique_key: c.unique_key ?? null,
      ...(c.weight !== undefined ? { weight: c.weight } : {}),
      ...(c.child_failures !== undefined ? { child_failures: c.child_failures } : {}),
      ...(c.finalize !== undefined ? { finalize: c.finalize } : {}),
    }
  })
  const made = await g.s.sql.begin(async (tx) => {
    const parent = await lockParent(tx, frame.process_id)
    if (!parent) return { refused: 'not_found' as const }
    if (parent.status === 'cancelled') return { refused: 'cancelled' as const }
    const owner =
      parent.status === 'running' &&
      parent.worker_id === workerId &&
      (frame.attempt === undefined || parent.attempts === frame.attempt) &&
      (parent.worker_token_id === null || parent.worker_token_id === ws.data.tokenId)
    if (!owner) return { refused: parent.status === 'running' ? ('not_owner' as const) : ('invalid_transition' as const) }
    if (parent.depth + 1 > MAX_DEPTH) return { refused: 'deep' as const }
    const rows = await insertProcessRows(tx, { workspaceId: parent.workspace_id, createdBy: null, items, parent })
    const [after] = await getProcesses(tx, [parent.id])
    return { refused: undefined, children: rows.map(toProcess), parent: after! }
  })
  if (made.refused !== undefined) {
    if (made.refused === 'deep') throw new FrameError('invalid_message', `a tree is at most ${MAX_DEPTH} levels deep`)
    throw new FrameError(made.refused, refusalMessage(made.refused, 'spawn'))
  }
  // The holder's live states go on from the row's new version (the children's insert moved it).
  if (lease && g.held.get(lease.id) === lease) g.held.committed(lease, made.parent)
  g.s.hub.publishAll([made.parent, ...made.children])
  announceNew(g.s.hub, made.children)
  return { op: 'ack', version: made.parent.version, process_ids: made.children.map((c) => c.id), children: made.parent.children }
}

// The state machine as data: nothing else is allowed. Every status write is built from this table.
export const STATUSES = ['pending', 'running', 'waiting_review', 'completed', 'failed', 'cancelled'] as const
export type Status = (typeof STATUSES)[number]

export const TRANSITIONS = {
  pending: ['running', 'cancelled'],
  // running → pending is the queue's extension: a fail or a lease time-out with attempts left
  // (attempts < max_attempts) goes back to pending, due after a backoff; with none left, failed.
  running: ['completed', 'waiting_review', 'failed', 'cancelled', 'pending'],
  waiting_review: ['completed', 'cancelled'],
  failed: ['pending'],
  completed: [],
  cancelled: [],
} as const satisfies Record<Status, readonly Status[]>

/** The worker's part is over: a stream sends `done` and ends. */
export const DONE: readonly Status[] = ['completed', 'failed', 'cancelled', 'waiting_review']

export const isDone = (status: string) => (DONE as readonly string[]).includes(status)

export function canTransition(from: Status, to: Status): boolean {
  return (TRANSITIONS[from] as readonly Status[]).includes(to)
}

/** Every status that may move to `to`, narrowed to `among` when an operation only starts from some of them. */
export function sourcesOf(to: Status, among: readonly Status[] = STATUSES): Status[] {
  return among.filter((from) => canTransition(from, to))
}

/** Statuses nothing leaves (completed, cancelled): a row in one of them never changes again. */
export const FINAL: readonly Status[] = STATUSES.filter((s) => TRANSITIONS[s].length === 0)

/** Statuses that may still change (pending, running, waiting_review, failed — failed by a retry). */
export const NOT_FINAL: readonly Status[] = STATUSES.filter((s) => TRANSITIONS[s].length > 0)

/** One operation's edge: where it goes and the statuses it leaves (`among`, narrowed by the table). */
export interface Edge {
  to: Status
  from: readonly Status[]
}

/** An operation's edge into `to` from `among`; throws (at load, where edges are module constants) if the table has none. */
export function edge(among: readonly Status[], to: Status): Edge {
  const from = sourcesOf(to, among)
  if (from.length === 0) throw new Error(`the state machine has no edge ${among.join(' | ')} → ${to}`)
  return { to, from }
}

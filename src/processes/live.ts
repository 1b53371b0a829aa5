// Live state (README: Worker protocol, "Live state"): a worker's progress is acked once this instance accepts
// it, fanned out at once and written behind, so a stream may have shown versions the row does not hold yet.
// Versions stay strictly increasing per process, across instances and crashes, by one rule about who may
// count on from what:
//
// - The lease holder (the instance whose socket claimed, started or took over the lease) numbers its live
//   states on from the row: each accepted state is the version before it + 1. The row's `live_base` is the
//   version its lease began at; the holder's writes are guarded by it.
// - Anyone else who commits a change to a running process (a user's cancel, the lease sweep, another
//   instance taking the lease over at a worker's hello) cannot know how far the holder got, so it jumps past
//   anything the holder may have shown: greatest(version, live_base) + LIVE_VERSION_JUMP. A holder never runs
//   more than LIVE_LEAD_MAX versions ahead of what it has written (it waits for its write-behind first).
// - A takeover moves live_base past the old holder's reach; the old holder's late writes then find another
//   live_base and change nothing.
import type { Process } from './model'

/** How far a holder's live versions may run ahead of the row before it waits for its write-behind. */
export const LIVE_LEAD_MAX = 9_999

/** What a commit by anyone but the holder adds to a running process's version (past LIVE_LEAD_MAX). */
export const LIVE_VERSION_JUMP = LIVE_LEAD_MAX + 1

/** What the processes' reads see of this instance's live states (the worker gateway's leases keep them). */
export interface LiveView {
  /** The newest accepted state of a process this instance holds the lease of; undefined when it holds none. */
  newest(id: number): Process | undefined
}

/** No live states (an instance without a worker gateway: the CLI, a test's app). */
export const NO_LIVE_STATES: LiveView = { newest: () => undefined }

/** The newer of two states of one process (by version); either may be absent. */
export function newer(a: Process | undefined | null, b: Process | undefined | null): Process | null {
  if (!a) return b ?? null
  if (!b) return a
  return b.version > a.version ? b : a
}

// Server-Sent Events for a whole workspace, `GET /processes/stream` (extension).
//
// A workspace stream's snapshot can be tens of thousands of processes, re-sent on every reconnect, so it is
// read a page at a time (keyset by id) as the socket drains: the first page before the response (a database
// error is still a 503), each next one only when pull() finds nothing queued to write. A stream holds about a
// page, and a reader that stops reading stops the reads. Live changes are written as they come meanwhile; the
// dedup by version per process drops a page row the client already has newer, and a late copy of a state
// the snapshot already sent (what the snapshot sent is kept in two typed arrays, not a Map entry per row).
import type { ProcessHub } from './hub-rules'
import type { Process } from './model'
import { type Filter, SseSession, type StreamSettings, streamStats } from './sse-session'

/** Rows per workspace snapshot page, at most; fewer when rows are large, for about SNAPSHOT_PAGE_BYTES a page. */
export const SNAPSHOT_PAGE = 500
export const SNAPSHOT_PAGE_BYTES = 1024 * 1024

/**
 * What a workspace snapshot sent: id → version, and (with a status filter) whether the client's last state of
 * it matched. Ids only ascend, page after page, so they sit in sorted typed arrays searched by bisection:
 * 17 bytes a process where a Map entry costs about 110, for snapshots of tens of thousands.
 */
class SnapshotLedger {
  private ids = new Float64Array(0)
  private versions = new Float64Array(0)
  private shownFlags: Uint8Array | null
  private size = 0

  constructor(withShown: boolean) {
    this.shownFlags = withShown ? new Uint8Array(0) : null
  }

  /** Records a sent row; ids must ascend. */
  add(id: number, version: number) {
    if (this.size === this.ids.length) this.resize(Math.max(64, this.size * 2))
    this.ids[this.size] = id
    this.versions[this.size] = version
    if (this.shownFlags) this.shownFlags[this.size] = 1
    this.size++
  }

  /** The snapshot is all read: drop the spare capacity. */
  trim() {
    this.resize(this.size)
  }

  /** The row's index, or -1 if the snapshot did not send this id. */
  indexOf(id: number): number {
    let lo = 0
    let hi = this.size - 1
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1
      const at = this.ids[mid]!
      if (at === id) return mid
      if (at < id) lo = mid + 1
      else hi = mid - 1
    }
    return -1
  }

  version(at: number): number {
    return this.versions[at]!
  }

  /** Whether the client's last state of this row matched the status filter; sets the new answer. */
  swapShown(at: number, shown: boolean): boolean {
    const was = this.shownFlags![at] === 1
    this.shownFlags![at] = shown ? 1 : 0
    return was
  }

  private resize(capacity: number) {
    const grow = <T extends Float64Array | Uint8Array>(from: T, to: T): T => {
      to.set(from.subarray(0, this.size))
      return to
    }
    this.ids = grow(this.ids, new Float64Array(capacity))
    this.versions = grow(this.versions, new Float64Array(capacity))
    if (this.shownFlags) this.shownFlags = grow(this.shownFlags, new Uint8Array(capacity))
  }
}

/**
 * `/processes/stream`: every non-final matching process first (a page at a time, as the socket drains), then
 * each change of a matching one. Changes arriving while the snapshot goes out are sent at once.
 */
export async function openWorkspaceStream(o: {
  hub: ProcessHub
  settings: StreamSettings
  workspaceId: number
  statuses?: string[]
  type?: string
  /** Only processes carrying every one of these tags (they never change, so a process never leaves this filter). */
  tags?: string[]
  /** A public token's scope: only the processes it covers. */
  scope?: { processIds: number[] | null; tags: string[] | null }
  /** Only the processes of one tree: the root and its descendants. */
  rootId?: number
  /** Non-final matching processes with an id above `after`, ascending by id, at most `limit`. */
  readPage: (after: number, limit: number) => Promise<Process[]>
  /**
   * Snapshot rows at most (WORKSPACE_STREAM_SNAPSHOT_MAX): past it the snapshot stops with `event: truncated`
   * (`{"limit", "after_id"}`: the last id sent; the rest is the list's, `GET /processes?status=…`), and live
   * changes go on as before. A reconnect re-sends the whole snapshot, so without a cap one workspace of
   * 100,000 pending processes costs 200 pages on every reconnect of every dashboard.
   */
  snapshotMax?: number
  register?: (close: () => void) => () => void
}): Promise<Response> {
  // The last id the snapshot has read; null once it is all read.
  let cursor: number | null = 0
  const ledger = new SnapshotLedger(o.statuses !== undefined)
  // With a status filter, a process that leaves it is still sent once, so a dashboard sees it leave: the
  // ledger says whether a snapshot row is shown, this set the processes sent live only.
  const shown = new Set<number>()
  const filter: Filter = (p) => {
    if (p.workspace_id !== o.workspaceId) return false
    if (o.type && p.type !== o.type) return false
    if (o.tags && !o.tags.every((tag) => p.tags.includes(tag))) return false
    if (o.scope && !(o.scope.processIds?.includes(p.id) || o.scope.tags?.some((tag) => p.tags.includes(tag)))) return false
    if (o.rootId !== undefined && p.root_id !== o.rootId) return false
    const at = ledger.indexOf(p.id)
    // The snapshot sent this version or a newer one: a late copy (from Redis, a resync, a racing publish).
    if (at !== -1 && p.version <= ledger.version(at)) return false
    if (!o.statuses) return true
    const matches = o.statuses.includes(p.status)
    if (at !== -1) return ledger.swapShown(at, matches) || matches
    if (matches) {
      shown.add(p.id)
      return true
    }
    if (shown.delete(p.id)) return true
    // Left the filter before the snapshot reached it: a page being read may still hold an older, matching
    // state of it, which must not be sent as current.
    if (cursor !== null && p.id > cursor) session.markSent(p)
    return false
  }
  let limit = SNAPSHOT_PAGE
  const snapshotMax = o.snapshotMax ?? Number.POSITIVE_INFINITY
  let read = 0
  const readPage = async (): Promise<boolean> => {
    // The last page asks for one row more than the cap leaves: whether more remain, to say so.
    const remaining = snapshotMax - read
    const ask = Math.min(limit, remaining + 1)
    const fetched = await o.readPage(cursor!, ask)
    const truncated = fetched.length > remaining
    const rows = truncated ? fetched.slice(0, remaining) : fetched
    read += rows.length
    streamStats.snapshotRows += rows.length
    let bytes = 0
    let sent = 0
    for (const row of rows) {
      const length = session.sendSnapshot(row)
      if (length === 0) continue
      ledger.add(row.id, row.version)
      bytes += length
      sent++
    }
    const lastId = rows.length > 0 ? rows[rows.length - 1]!.id : cursor!
    cursor = truncated || fetched.length < ask ? null : lastId
    if (truncated) session.write(`event: truncated\ndata: {"limit":${snapshotMax},"after_id":${lastId}}\n\n`)
    if (cursor === null) ledger.trim()
    // Large rows (big metadata), smaller pages: a page stays about SNAPSHOT_PAGE_BYTES.
    if (sent > 0) limit = Math.max(1, Math.min(SNAPSHOT_PAGE, Math.floor(SNAPSHOT_PAGE_BYTES / (bytes / sent))))
    return cursor !== null
  }
  const session = new SseSession({ settings: o.settings, endsOnDone: false, withIds: false, filter, readMore: readPage })
  if (o.register) session.addUnsubscribe(o.register(() => session.close()))
  session.addUnsubscribe(await o.hub.watchWorkspace(o.workspaceId, session.offer))
  session.write(`retry: ${o.settings.retryMs}\n\n`)
  try {
    await session.readMore()
  } catch (error) {
    session.close()
    throw error
  }
  return session.response()
}

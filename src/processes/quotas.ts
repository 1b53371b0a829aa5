// Per-workspace quotas on new work: pending processes, distinct types among them, and the bytes
// of their metadata. One tenant filling the queue with 600,000 types or gigabytes of metadata costs every
// claim, every depth sample and the disk; past its quota its creates are refused with 429 `rate_limited`,
// details.quota naming the quota, until workers drain it.
//
// Under concurrency: creates are group-committed (create-batcher.ts), on any number of instances, so two
// transactions could each see room for the last slot. Each transaction that creates in a workspace first
// takes that workspace's advisory lock (pg_advisory_xact_lock, held to commit), then counts: a second
// transaction counts only after the first has committed, and sees its rows. A check inside the insert
// statement alone would not do: under read committed two concurrent statements count the same snapshot.
// The lock serialises only creates of one workspace (a batch of up to 500 per transaction), never another
// tenant's, and never claims.
import type { Sql } from '../db/client'
import { HttpError } from '../errors'

export interface Quotas {
  /** 0: no quota. */
  maxPending: number
  maxPendingTypes: number
  maxMetadataBytes: number
  /** The last count per workspace on this instance (see FAR_BELOW). */
  counted?: Map<number, { pending: number; bytes: number; atMs: number }>
}

type QuotaConfig = { WORKSPACE_MAX_PENDING: number; WORKSPACE_MAX_PENDING_TYPES: number; WORKSPACE_MAX_METADATA_BYTES: number }
const ofConfig = new WeakMap<QuotaConfig, Quotas>()

/** The config's quotas, one object per config (its counts are shared by every create path of the instance). */
export function quotasOf(config: QuotaConfig): Quotas {
  let quotas = ofConfig.get(config)
  if (!quotas) {
    quotas = {
      maxPending: config.WORKSPACE_MAX_PENDING,
      maxPendingTypes: config.WORKSPACE_MAX_PENDING_TYPES,
      maxMetadataBytes: config.WORKSPACE_MAX_METADATA_BYTES,
      counted: new Map(),
    }
    ofConfig.set(config, quotas)
  }
  return quotas
}

export const NO_QUOTAS: Quotas = { maxPending: 0, maxPendingTypes: 0, maxMetadataBytes: 0 }

/**
 * Counting a workspace's pending rows costs what it holds: 43 ms per batch at 50,000 pending (2 shared cores,
 * load 10). A count less than COUNT_TTL_MS old that puts the workspace, with the batch, below half of each
 * quota is used again instead (plus what this instance admitted since): to pass the quota from there, the
 * other half would have to be created within that second, far past RATE_LIMIT_PER_WORKSPACE_PER_S. Near a
 * quota, every check counts, under the lock.
 */
const COUNT_TTL_MS = 1000
const FAR_BELOW = 0.5
const MAX_COUNTED = 10_000

export interface QuotaItem {
  workspaceId: number
  type: string
  metadata: object
}

/** The two-key advisory lock space of quotas ("quot"); the one-key locks (migrations, caps) are a separate space. */
const QUOTA_LOCK_CLASS = 0x71756f74

export type QuotaName = 'WORKSPACE_MAX_PENDING' | 'WORKSPACE_MAX_PENDING_TYPES' | 'WORKSPACE_MAX_METADATA_BYTES'

export function quotaExceeded(quota: QuotaName, limit: number, workspaceId: number, what: string) {
  return new HttpError(
    429,
    'rate_limited',
    `This workspace ${what}, its quota (${quota} = ${limit}); more can be created once workers have taken some`,
    { quota, limit, workspace_id: workspaceId },
    { 'Retry-After': '1' },
  )
}

/**
 * A new item's metadata bytes: its JSON text, UTF-8. Stored processes count their stored size
 * (pg_column_size: jsonb, compressed when large), which is what the quota guards (the disk) and is read
 * without rendering anything; uncompressed, the two are within a few bytes of each other.
 */
const bytesOf = (metadata: object) => Buffer.byteLength(JSON.stringify(metadata))

/**
 * Admits the items in order, within `tx` (a transaction): for each, null when it fits its workspace's quotas
 * (counting the items admitted before it), else the 429 to answer it with. Takes each workspace's quota
 * lock for the rest of the transaction, in ascending order (no deadlock between two batches).
 */
export async function admit(tx: Sql, quotas: Quotas, items: readonly QuotaItem[]): Promise<(HttpError | null)[]> {
  const verdicts: (HttpError | null)[] = items.map(() => null)
  if ((quotas.maxPending === 0 && quotas.maxPendingTypes === 0 && quotas.maxMetadataBytes === 0) || items.length === 0) return verdicts
  const workspaceIds = [...new Set(items.map((i) => i.workspaceId))].sort((a, b) => a - b)
  for (const workspaceId of workspaceIds) {
    const mine = items.flatMap((item, i) => (item.workspaceId === workspaceId ? [i] : []))
    await tx`select pg_advisory_xact_lock(${QUOTA_LOCK_CLASS}, ${workspaceId % 2_147_483_647}::int)`
    const usage = await usageOf(
      tx,
      quotas,
      workspaceId,
      mine.map((i) => items[i]!),
    )
    for (const i of mine) {
      const item = items[i]!
      const bytes = quotas.maxMetadataBytes > 0 ? bytesOf(item.metadata) : 0
      const newType = !usage.types.has(item.type)
      if (quotas.maxPending > 0 && usage.pending + 1 > quotas.maxPending)
        verdicts[i] = quotaExceeded('WORKSPACE_MAX_PENDING', quotas.maxPending, workspaceId, `has ${usage.pending} pending processes`)
      else if (quotas.maxPendingTypes > 0 && newType && usage.typeCount + 1 > quotas.maxPendingTypes)
        verdicts[i] = quotaExceeded(
          'WORKSPACE_MAX_PENDING_TYPES',
          quotas.maxPendingTypes,
          workspaceId,
          `has pending processes of ${usage.typeCount} types, and ${JSON.stringify(item.type)} would be one more`,
        )
      else if (quotas.maxMetadataBytes > 0 && usage.bytes + bytes > quotas.maxMetadataBytes)
        verdicts[i] = quotaExceeded(
          'WORKSPACE_MAX_METADATA_BYTES',
          quotas.maxMetadataBytes,
          workspaceId,
          `holds ${usage.bytes} bytes of metadata in pending processes, and this one has ${bytes}`,
        )
      else {
        usage.pending++
        usage.bytes += bytes
        if (newType) {
          usage.types.add(item.type)
          usage.typeCount++
        }
      }
    }
    if (quotas.counted) {
      if (usage.counted) {
        if (quotas.counted.size >= MAX_COUNTED) quotas.counted.clear()
        quotas.counted.set(workspaceId, { pending: usage.pending, bytes: usage.bytes, atMs: Date.now() })
      } else {
        const entry = quotas.counted.get(workspaceId)
        if (entry) Object.assign(entry, { pending: usage.pending, bytes: usage.bytes })
      }
    }
  }
  return verdicts
}

interface Usage {
  pending: number
  bytes: number
  /** Distinct pending types, counted up to the quota (beyond it the count stops: it is refused either way). */
  typeCount: number
  /** Those of the batch's types that already have pending processes in the workspace. */
  types: Set<string>
  /** Counted now (not from a recent count). */
  counted: boolean
}

/**
 * What the workspace's pending processes hold, each count bounded by its quota (a count stops one past it),
 * so the check costs at most the quota's rows, never a whole table: pending rows through processes_claim_idx
 * (workspace first), distinct types by a skip scan over it, one probe per type.
 */
async function usageOf(tx: Sql, quotas: Quotas, workspaceId: number, items: QuotaItem[]): Promise<Usage> {
  const types = items.map((i) => i.type)
  const recent = quotas.counted?.get(workspaceId)
  const batchBytes = quotas.maxMetadataBytes > 0 ? items.reduce((sum, i) => sum + bytesOf(i.metadata), 0) : 0
  const farBelow =
    recent !== undefined &&
    Date.now() - recent.atMs < COUNT_TTL_MS &&
    (quotas.maxPending === 0 || recent.pending + items.length < quotas.maxPending * FAR_BELOW) &&
    (quotas.maxMetadataBytes === 0 || recent.bytes + batchBytes < quotas.maxMetadataBytes * FAR_BELOW)
  let usage: Usage
  if (farBelow) usage = { pending: recent.pending, bytes: recent.bytes, typeCount: 0, types: new Set(), counted: false }
  else {
    const rowLimit = quotas.maxPending > 0 ? quotas.maxPending + 1 : null
    const [counted] = await tx<{ pending: number; bytes: number }[]>`
      select count(*)::int as pending, coalesce(sum(${quotas.maxMetadataBytes > 0 ? tx`pg_column_size(metadata)` : tx`0`}), 0)::bigint as bytes
        from (select metadata from processes where workspace_id = ${workspaceId} and status = 'pending' ${rowLimit ? tx`limit ${rowLimit}` : tx``}) x`
    usage = { pending: counted!.pending, bytes: Number(counted!.bytes), typeCount: 0, types: new Set(), counted: true }
  }
  if (quotas.maxPendingTypes === 0) return usage
  const distinct = [...new Set(types)]
  const present = await tx<{ type: string }[]>`
    select t.type from unnest(${distinct}::text[]) as t(type)
     where exists (select 1 from processes p where p.workspace_id = ${workspaceId} and p.status = 'pending' and p.type = t.type)`
  for (const { type } of present) usage.types.add(type)
  // Only a type new to the workspace's pending work can pass the quota: count the others then, and only then.
  if (present.length === distinct.length) return usage
  const [lanes] = await tx<{ n: number }[]>`
    with recursive lanes as (
      (select type from processes where status = 'pending' and workspace_id = ${workspaceId} order by type limit 1)
      union all
      select n.type from lanes l cross join lateral (
        select type from processes where status = 'pending' and workspace_id = ${workspaceId} and type > l.type order by type limit 1
      ) n
    )
    select count(*)::int as n from (select 1 from lanes limit ${quotas.maxPendingTypes + 1}) x`
  usage.typeCount = lanes!.n
  return usage
}

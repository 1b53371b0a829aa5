// Live output (README: Live output): the chunks workers append, per process in seq order. Written behind in
// batches (src/workers/output-behind.ts), read in pages (GET /processes/{id}/output, a stream's catch-up).
import type { Sql } from '../../db/client'

/** One chunk as the write-behind holds it: its JSON text as the worker's frame had it, and its lease. */
export interface OutputRow {
  process_id: number
  seq: number
  /** The chunk's JSON text (a string chunk is a JSON string). */
  text: string
  bytes: number
  /** The lease it was accepted under: a write after the lease moved (a takeover, a new attempt) adds nothing. */
  attempt: number
  base: number
}

export interface OutputChunk {
  seq: number
  chunk: unknown
  created_at: string
}

/**
 * Many processes' chunks in one statement. The recordset is built as text around each chunk's own JSON, so a
 * chunk is never serialised twice. A chunk whose lease has moved on finds no row to join and is dropped (a
 * takeover's new holder numbers on from what is written); one already written (a retried statement) is skipped.
 */
export function insertOutput(sql: Sql, rows: readonly OutputRow[]) {
  const text = `[${rows
    .map((r) => `{"process_id":${r.process_id},"seq":${r.seq},"attempt":${r.attempt},"base":${r.base},"bytes":${r.bytes},"chunk":${r.text}}`)
    .join(',')}]`
  const ids = [...new Set(rows.map((r) => r.process_id))]
  return sql`
    insert into process_output (process_id, seq, chunk, bytes)
    select x.process_id, x.seq, x.chunk, x.bytes
      from jsonb_to_recordset(${text}::text::jsonb)
           as x(process_id bigint, seq bigint, attempt int, base bigint, bytes int, chunk jsonb)
      join processes p on p.id = x.process_id and p.attempts = x.attempt and p.live_base = x.base
     where p.id = any(${ids}::bigint[])
    on conflict do nothing`
}

/** What a process's output holds so far: its last seq and its bytes (a lease's first chunk numbers on from it). */
export async function outputTotals(sql: Sql, processId: number): Promise<{ seq: number; bytes: number }> {
  const [row] = await sql<{ seq: number; bytes: number }[]>`
    select coalesce(max(seq), 0)::float8 as seq, coalesce(sum(bytes), 0)::float8 as bytes
      from process_output where process_id = ${processId}`
  return { seq: Number(row!.seq), bytes: Number(row!.bytes) }
}

/** Chunks after `after`, ascending, at most `limit` (and before `before`, when given). */
export async function listOutput(sql: Sql, processId: number, after: number, limit: number, before?: number): Promise<OutputChunk[]> {
  const rows = await sql<{ seq: number; chunk: unknown; created_at: string }[]>`
    select seq::float8 as seq, chunk, created_at from process_output
     where process_id = ${processId} and seq > ${after} ${before === undefined ? sql`` : sql`and seq < ${before}`}
     order by seq
     limit ${limit}`
  return rows.map((r) => ({ seq: Number(r.seq), chunk: r.chunk, created_at: r.created_at }))
}

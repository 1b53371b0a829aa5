// Reads of one process by id for the REST and stream routes, batched (src/db/batch.ts): the rows of every
// look-up of one event-loop turn come from one query, and each caller sees a row only if it is a member of
// the row's workspace, so a batch shared by several tenants never hands one tenant another's process.
//
// The JSON is rendered here, from the row postgres.js has parsed (jsonb arrives parsed), not by Postgres: the
// SQL renderer (sql/003_queue.sql's compact_json) ran a PL/pgSQL call per JSON value, and a 1 MB array of
// zeros in one process's metadata made every GET of it cost 8 s of database CPU; JSON.stringify
// of the same row is a few milliseconds of this instance's own.
//
// A running process may have a newer live state than its row (src/processes/live.ts): the one this instance
// accepted (it holds the lease) or the one its hub last delivered (something here watches the process). A
// read answers with the newest of the three.
import { Batcher } from '../db/batch'
import type { Sql } from '../db/client'
import { processJson, type ProcessHub } from './hub-rules'
import { type LiveView, newer } from './live'
import type { Process } from './model'
import { getProcesses, getVersions, type ProcessText, type ProcessVersion } from './queries/reads'

export class ProcessReader {
  private readonly rows: Batcher<Process>
  private readonly versions: Batcher<ProcessVersion>

  constructor(
    sql: Sql,
    private readonly live: LiveView,
    private readonly hub: ProcessHub,
  ) {
    this.rows = new Batcher((ids) => getProcesses(sql, ids))
    this.versions = new Batcher((ids) => getVersions(sql, ids))
  }

  /** The newest live state this instance knows of a process, if any (held here, or last seen by the hub). */
  liveState(id: number): Process | null {
    return newer(this.live.newest(id), this.hub.latest(id))
  }

  /** The process, if it exists in one of these workspaces. */
  async find(id: number, workspaceIds: number[]): Promise<Process | null> {
    const row = await visible(this.rows, id, workspaceIds)
    return row && newer(row, this.liveState(id))
  }

  /** Its JSON text and version, for answering with it as it is (GET /processes/{id}). */
  async findText(id: number, workspaceIds: number[]): Promise<ProcessText | null> {
    const row = await visible(this.rows, id, workspaceIds)
    if (!row) return null
    const newest = newer(row, this.liveState(id))!
    return { id, workspace_id: newest.workspace_id, version: newest.version, json: processJson(newest) }
  }

  /** Only its version and workspace (the cheap If-None-Match path), if it exists in one of these workspaces. */
  async version(id: number, workspaceIds: number[]): Promise<ProcessVersion | null> {
    const row = await visible(this.versions, id, workspaceIds)
    if (!row) return null
    const live = this.liveState(id)
    return live && live.version > row.version ? { id, workspace_id: row.workspace_id, version: live.version } : row
  }
}

/** The batched row, or null when there is none or it belongs to a workspace the caller is not in. */
async function visible<V extends { id: number; workspace_id: number }>(batcher: Batcher<V>, id: number, workspaceIds: number[]): Promise<V | null> {
  const row = await batcher.load(id)
  return row !== null && workspaceIds.includes(row.workspace_id) ? row : null
}

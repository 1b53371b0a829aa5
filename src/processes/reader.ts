// Reads of one process by id for the REST and stream routes, batched (src/db/batch.ts): the rows of every
// look-up of one event-loop turn come from one query, and each caller sees a row only if it is a member of
// the row's workspace, so a batch shared by several tenants never hands one tenant another's process.
import { Batcher } from '../db/batch'
import type { Sql } from '../db/client'
import type { Process } from './model'
import { getProcessTexts, getProcesses, getVersions, type ProcessText, type ProcessVersion } from './queries/reads'

export class ProcessReader {
  private readonly rows: Batcher<Process>
  private readonly texts: Batcher<ProcessText>
  private readonly versions: Batcher<ProcessVersion>

  constructor(sql: Sql) {
    this.rows = new Batcher((ids) => getProcesses(sql, ids))
    this.texts = new Batcher((ids) => getProcessTexts(sql, ids))
    this.versions = new Batcher((ids) => getVersions(sql, ids))
  }

  /** The process, if it exists in one of these workspaces. */
  find(id: number, workspaceIds: number[]): Promise<Process | null> {
    return visible(this.rows, id, workspaceIds)
  }

  /** Its JSON text and version, for answering with it as it is (GET /processes/{id}). */
  findText(id: number, workspaceIds: number[]): Promise<ProcessText | null> {
    return visible(this.texts, id, workspaceIds)
  }

  /** Only its version and workspace (the cheap If-None-Match path), if it exists in one of these workspaces. */
  version(id: number, workspaceIds: number[]): Promise<ProcessVersion | null> {
    return visible(this.versions, id, workspaceIds)
  }
}

/** The batched row, or null when there is none or it belongs to a workspace the caller is not in. */
async function visible<V extends { id: number; workspace_id: number }>(batcher: Batcher<V>, id: number, workspaceIds: number[]): Promise<V | null> {
  const row = await batcher.load(id)
  return row !== null && workspaceIds.includes(row.workspace_id) ? row : null
}

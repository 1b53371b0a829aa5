// What a Redis outage may have hidden from this instance, re-read from Postgres once Redis is back: every
// watched process, every change in watched workspaces since the outage began, and every lease of a watched
// worker that ended meanwhile (so its worker still hears `cancel`).
import type { Sql } from '../db/client'
import { getProcesses, listChangedSince, listLeasesEndedSince } from './queries/reads'
import type { ProcessHub } from './hub-rules'

export async function resyncFromDatabase(sql: Sql, hub: ProcessHub, since: Date): Promise<void> {
  for (const process of await getProcesses(sql, hub.watchedIds())) hub.deliver(process)
  for (const process of await listChangedSince(sql, hub.watchedWorkspaceIds(), since)) hub.deliver(process)
  for (const process of await listLeasesEndedSince(sql, hub.watchedWorkerIds(), since)) hub.deliver(process)
}

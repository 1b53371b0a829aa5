// What a public (end-user) token covers (src/auth/public-tokens.ts): a process outside its scope is not found,
// as one of another workspace is, with no hint that it exists.
import type { Principal } from '../auth/authenticator'
import { covers } from '../auth/public-tokens'
import { notFound } from '../errors'
import type { ProcessReader } from './reader'

/** 404 unless the caller may see this process: always for an API token or session, by scope for a public token. */
export async function requireCovered(reader: ProcessReader, principal: Principal, id: number): Promise<void> {
  const scope = principal.scope
  if (!scope || scope.processIds?.includes(id)) return
  const process = scope.tags ? await reader.find(id, principal.workspaceIds) : null
  if (process && covers(scope, process)) return
  throw notFound('Process not found')
}

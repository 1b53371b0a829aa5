// The first start on an empty embedded database creates something to try at once.
import { createApiToken, createUser, createWorkerToken, createWorkspace } from './auth/queries'
import type { Sql } from './db/client'

export async function seedDemoIfEmpty(sql: Sql, port: number): Promise<string | null> {
  const [{ n }] = (await sql<{ n: number }[]>`select count(*)::int as n from workspaces`) as [{ n: number }]
  if (n > 0) return null
  const workspace = await createWorkspace(sql, 'Demo')
  const user = await createUser(sql, 'demo@example.com', workspace.id, 'owner')
  const api = await createApiToken(sql, user.id, 'demo', null)
  const worker = await createWorkerToken(sql, 'demo worker')
  const base = `http://localhost:${port}`
  return [
    '',
    'Embedded database created with a demo workspace. Save these; they are shown once:',
    `  workspace:    ${workspace.name} (id ${workspace.id})`,
    `  user:         ${user.email} (id ${user.id})`,
    `  API token:    ${api.token}`,
    `  worker token: ${worker.token}`,
    '',
    'Try it:',
    `  curl -s -X POST ${base}/processes -H 'Authorization: Bearer ${api.token}' -H 'Content-Type: application/json' -d '{"type":"csv_import"}'`,
    `  curl -s ${base}/processes -H 'Authorization: Bearer ${api.token}'`,
    `  WORKER_TOKEN=${worker.token} bun run worker:demo`,
    `  open ${base}/ and paste the API token`,
    '',
  ].join('\n')
}

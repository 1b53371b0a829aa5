// The first start on an empty embedded database creates something to try at once.
import { createApiToken, createUser, createWorkerToken, createWorkspace } from './auth/queries'
import type { Sql } from './db/client'

/** The demo worker's own default server is localhost:3000; on any other port the banner says where. */
const DEFAULT_PORT = 3000

export async function seedDemoIfEmpty(sql: Sql, port: number): Promise<string | null> {
  const [{ n }] = (await sql<{ n: number }[]>`select count(*)::int as n from workspaces`) as [{ n: number }]
  if (n > 0) return null
  const workspace = await createWorkspace(sql, 'Demo')
  const user = await createUser(sql, 'demo@example.com', workspace.id, 'owner')
  const api = await createApiToken(sql, user.id, 'demo', null)
  // Scoped to the demo workspace: the default a user copies (README "Security").
  const worker = await createWorkerToken(sql, 'demo worker', { workspaceIds: [workspace.id] })
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
    // npm, not bun: with `npm ci` bun is only in node_modules/.bin, which `npm run` puts on PATH.
    `  ${port === DEFAULT_PORT ? '' : `PROCESSES_URL=${base} `}WORKER_TOKEN=${worker.token} npm run worker:demo`,
    // A URL, not a command: `open` is macOS-only.
    `  dashboard: ${base}/ (in a browser; paste the API token)`,
    '',
    'Lost them? Tokens are stored only hashed, so new ones are minted instead (this works while the server runs):',
    `  npm run cli -- create-token --user ${user.id}`,
    `  npm run cli -- create-worker-token --workspace ${workspace.id}`,
    '',
  ].join('\n')
}

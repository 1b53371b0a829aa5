// Reference ceiling for `bench rest`: Bun.serve + postgres.js running the same single-row select as
// GET /processes/{id} (same query, same pool size, same int8 / timestamptz parsing), with no auth, no audit,
// no framework. GET /processes/{id} at ≥ 0.8× this rate means auth, audit, routing and validation cost < 20%.
import postgres from 'postgres'

const INT8_OID = 20
const TIMESTAMPTZ_OID = 1184
const sql = postgres(process.env.DATABASE_URL!, {
  max: Number(process.env.DB_POOL_MAX ?? 10),
  onnotice: () => {},
  types: {
    int8: { to: INT8_OID, from: [INT8_OID], serialize: (x: number) => String(x), parse: (x: string) => Number(x) },
    timestamptz: {
      to: TIMESTAMPTZ_OID,
      from: [TIMESTAMPTZ_OID],
      serialize: (x: Date | string) => (x instanceof Date ? x.toISOString() : x),
      parse: (x: string) => new Date(x.includes('T') ? x : x.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00')).toISOString(),
    },
  },
})
const workspaceIds = [Number(process.env.WORKSPACE_ID ?? 1)]

Bun.serve({
  port: Number(process.env.PORT ?? 0),
  hostname: '127.0.0.1',
  development: false,
  async fetch(request) {
    const path = new URL(request.url).pathname
    const match = /^\/processes\/(\d+)$/.exec(path)
    if (!match) return new Response(path === '/health' ? 'ok' : 'not found', { status: path === '/health' ? 200 : 404 })
    const [row] = await sql`select * from processes where id = ${Number(match[1])} and workspace_id = any(${workspaceIds}::bigint[])`
    if (!row) return Response.json({ error: { code: 'not_found', message: 'Process not found' } }, { status: 404 })
    const { heartbeat_at: _, ...process } = row
    return Response.json(process, { headers: { etag: `"${row.version}"`, 'cache-control': 'no-cache' } })
  },
})

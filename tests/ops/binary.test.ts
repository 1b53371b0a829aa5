// The standalone executable: built with `bun build --compile`, it carries its migrations and the dashboard,
// so it starts, migrates and serves from a folder with nothing else in it.
import { afterAll, describe, expect, it } from 'bun:test'
import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BUN, ROOT, freshDatabaseUrl, hasPostgres, spawnServer } from '../support/helpers'

const dir = mkdtempSync(join(tmpdir(), 'ps-binary-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
const binary = join(dir, 'processes-server')

describe('the compiled executable', () => {
  it('builds with bun build --compile', () => {
    const build = Bun.spawnSync(
      [BUN, 'build', 'src/main.ts', '--compile', '--external', '@electric-sql/pglite', '--outfile', join(dir, 'build', 'processes-server')],
      { cwd: ROOT },
    )
    expect(build.exitCode).toBe(0)
    // Run from a folder that has no sql/, no src/, no node_modules.
    cpSync(join(dir, 'build', 'processes-server'), binary)
    rmSync(join(dir, 'build'), { recursive: true })
  }, 120_000)

  it('says clearly that it needs DATABASE_URL, and exits 1', () => {
    const run = Bun.spawnSync([binary], { cwd: dir, env: { PATH: process.env.PATH ?? '' } })
    expect(run.exitCode).toBe(1)
    expect(run.stderr.toString()).toContain('DATABASE_URL')
    expect(run.stdout.toString()).toBe('')
  })

  it.skipIf(!hasPostgres)(
    'migrates a fresh database, serves the API and the dashboard, and answers its own healthcheck',
    async () => {
      const url = await freshDatabaseUrl()
      const created = Bun.spawnSync([binary, 'create-workspace', '--name', 'Bin'], { cwd: dir, env: { PATH: process.env.PATH ?? '', DATABASE_URL: url } })
      expect(created.exitCode).toBe(0)
      expect(JSON.parse(created.stdout.toString())).toMatchObject({ id: 1, name: 'Bin' })
      const server = await spawnServer({ DATABASE_URL: url, REDIS_URL: '' }, { cmd: [binary] })
      const ready = (await (await fetch(`${server.url}/ready`)).json()) as any
      expect(ready.dependencies.database).toEqual({ status: 'ok', kind: 'postgres' })
      expect((await fetch(`${server.url}/processes`)).status).toBe(401)
      expect((await fetch(server.metricsUrl)).status).toBe(200)
      expect((await fetch(`${server.url}/metrics`)).status).toBe(200) // METRICS_ON_API_PORT=on, the default
      expect(await (await fetch(`${server.url}/`)).text()).toContain('<html')
      // The dashboard's script, bundled at build time with the client package inside it.
      const script = await (await fetch(`${server.url}/app.js`)).text()
      expect(script).toContain('/processes/stats')
      expect(script).toContain('text/event-stream')
      // The API docs' assets are inside the executable too (no CDN).
      expect((await fetch(`${server.url}/openapi`)).status).toBe(200)
      expect((await fetch(`${server.url}/openapi/assets/swagger-ui-bundle.js`)).headers.get('content-type')).toContain('javascript')
      const health = Bun.spawnSync([binary, 'healthcheck'], { cwd: dir, env: { PATH: process.env.PATH ?? '', PORT: String(server.port) } })
      expect(health.exitCode).toBe(0)
      expect(await server.kill('SIGTERM')).toBe(0)
      const down = Bun.spawnSync([binary, 'healthcheck'], { cwd: dir, env: { PATH: process.env.PATH ?? '', PORT: String(server.port) } })
      expect(down.exitCode).toBe(1)
    },
    60_000,
  )
})

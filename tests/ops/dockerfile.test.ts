// The Dockerfile, executed without Docker (there is no Docker engine here or in CI), by the emulation in
// tests/support/docker-emulator.ts: the instructions are read from the Dockerfile itself, so a broken COPY path
// or a failing RUN fails this test.
import { describe, expect, it } from 'bun:test'
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { loadConfig } from '../../src/config'
import { ROOT, collectOutput, freePort, freshDatabaseUrl, hasPostgres, waitFor, within } from '../support/helpers'
import {
  DOCKER_STOP_TIMEOUT_MS,
  REPO_BUN,
  asUser,
  buildTime,
  canSwitchUser,
  children,
  containerArgv,
  containerCwd,
  containerEnv,
  durationMs,
  hostPath,
  image,
  mapExecutable,
  parseEnv,
  parsed,
  stageNamed,
  userIds,
} from '../support/docker-emulator'

describe('the Dockerfile', () => {
  it('parses, and uses only instructions this emulation runs', () => {
    const instructions = parsed()
    expect(instructions.filter((i) => i.keyword === 'FROM').length).toBeGreaterThanOrEqual(2)
    const known = ['FROM', 'WORKDIR', 'COPY', 'RUN', 'ENV', 'USER', 'EXPOSE', 'HEALTHCHECK', 'STOPSIGNAL', 'ENTRYPOINT', 'CMD', 'LABEL']
    expect(instructions.map((i) => i.keyword).filter((k) => !known.includes(k))).toEqual([])
  })

  it("builds from the oven/bun image of the repo's own bun (same major.minor)", () => {
    const from = parsed().find((i) => i.keyword === 'FROM' && /^oven\/bun:/.test(i.args))
    expect(from).toBeDefined()
    const tag = /^oven\/bun:(\S+)/.exec(from!.args)![1]!
    const version = Bun.spawnSync([REPO_BUN, '--version']).stdout.toString().trim()
    expect(version.split('.').slice(0, 2).join('.')).toBe(tag.split('.').slice(0, 2).join('.'))
  })

  it('EXPOSEs the default PORT and METRICS_PORT, which the image also sets', () => {
    const instructions = parsed()
    const finalAt = instructions.findLastIndex((i) => i.keyword === 'FROM')
    const final = instructions.slice(finalAt)
    const exposed = final.filter((i) => i.keyword === 'EXPOSE').flatMap((i) => i.args.split(/\s+/))
    const defaults = loadConfig({})
    const defaultPort = String(defaults.PORT)
    expect(exposed).toEqual([defaultPort, defaults.METRICS_PORT])
    const env = Object.assign({}, ...final.filter((i) => i.keyword === 'ENV').map((i) => parseEnv(i.args))) as Record<string, string>
    if (env.PORT !== undefined) expect(env.PORT).toBe(defaultPort)
    if (env.METRICS_PORT !== undefined) expect(env.METRICS_PORT).toBe(defaults.METRICS_PORT)
    // The server's own default is the loopback for an embedded database (and always for metrics); a container
    // is reached from outside it, by Prometheus too.
    expect(env.HOST).toBe('0.0.0.0')
    expect(env.METRICS_HOST).toBe('0.0.0.0')
  })

  it('runs its build stage: every COPY from the context (minus .dockerignore), every RUN, and the runtime COPY --from', () => {
    const { final, stages, runTimes } = image()
    console.log(`dockerfile emulation: built in ${buildTime()} ms (${runTimes.map((r) => `RUN at line ${r.line}: ${r.ms} ms`).join(', ')})`)
    expect(stages.length).toBeGreaterThanOrEqual(2)
    expect(final.copiedFrom.length).toBeGreaterThan(0)
    for (const c of final.copiedFrom) {
      const dest = hostPath(final, c.dest)
      expect(statSync(dest).isFile()).toBe(true)
      expect(statSync(dest).mode & 0o111).not.toBe(0) // executable, for any user
      expect(statSync(dest).mode & 0o004).not.toBe(0)
    }
  }, 300_000)

  it('installs exactly the versions in package-lock.json', () => {
    const { final, stages } = image()
    const build = stageNamed(stages, final.copiedFrom[0]!.stage)!
    const app = hostPath(build, '.')
    const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { version?: string; dev?: boolean; optional?: boolean; link?: boolean }>
    }
    // Every installed package (at any depth) is in the lock at that path, with that version.
    const installed: Record<string, string> = {}
    const walk = (dir: string, rel: string) => {
      if (!existsSync(dir)) return
      for (const name of readdirSync(dir)) {
        if (name.startsWith('.')) continue
        if (name.startsWith('@')) {
          for (const sub of readdirSync(join(dir, name))) visit(join(dir, name, sub), `${rel}/${name}/${sub}`)
        } else visit(join(dir, name), `${rel}/${name}`)
      }
    }
    const visit = (dir: string, rel: string) => {
      const manifest = join(dir, 'package.json')
      if (existsSync(manifest)) installed[rel] = (JSON.parse(readFileSync(manifest, 'utf8')) as { version: string }).version
      walk(join(dir, 'node_modules'), `${rel}/node_modules`)
    }
    walk(join(app, 'node_modules'), 'node_modules')
    expect(Object.keys(installed).length).toBeGreaterThan(0)
    // A workspace package (packages/client) is a link in the lock: its version is its folder's entry.
    const versionAt = (path: string) => {
      const entry = lock.packages[path] as { version?: string; link?: boolean; resolved?: string } | undefined
      return entry?.link && entry.resolved ? lock.packages[entry.resolved]?.version : entry?.version
    }
    const locked = Object.fromEntries(Object.keys(installed).map((path) => [path, versionAt(path)]))
    expect(installed).toEqual(locked as Record<string, string>)
    // And every locked runtime package that is neither dev nor optional is there.
    const required = Object.entries(lock.packages).filter(([path, p]) => path.startsWith('node_modules/') && !p.dev && !p.optional && !p.link)
    expect(required.filter(([path]) => !(path in installed)).map(([path]) => path)).toEqual([])
  }, 300_000)

  it('runs as an unprivileged USER that the image creates', () => {
    const { final } = image()
    const ids = userIds(final)
    expect(ids).not.toBeNull()
    expect(ids!.uid).not.toBe(0)
    const useradd = final.unrun.find((r) => /\buseradd\b/.test(r.args))
    if (useradd) expect(useradd.args).toMatch(new RegExp(`--uid[= ]${ids!.uid}\\b`))
    // The final stage's RUNs are not run here: only a useradd is understood.
    expect(final.unrun.filter((r) => !/^useradd\s/.test(r.args)).map((r) => r.args)).toEqual([])
  }, 300_000)

  it('starts from an empty folder and fails clearly without DATABASE_URL', () => {
    const { final } = image()
    const cwd = containerCwd(final)
    for (const name of ['sql', 'src', 'node_modules', 'package.json']) expect(existsSync(join(cwd, name))).toBe(false)
    const before = readdirSync(cwd).sort()
    const run = Bun.spawnSync(asUser(final, mapExecutable(final, containerArgv(final))), {
      cwd,
      env: containerEnv(final, { METRICS_PORT: '0' }),
      stdout: 'pipe',
      stderr: 'pipe',
      timeout: 30_000,
    })
    expect(run.exitCode).toBe(1)
    expect(run.stderr.toString()).toContain('DATABASE_URL')
    expect(run.stdout.toString()).toBe('')
    expect(readdirSync(cwd).sort()).toEqual(before) // no ./data or anything else left behind
  }, 300_000)

  describe.skipIf(!hasPostgres)('as a container on a fresh database', () => {
    it('serves within the start period, passes its HEALTHCHECK as written, and exits 0 on STOPSIGNAL', async () => {
      const { final } = image()
      const healthcheck = final.healthcheck
      expect(healthcheck).toBeTruthy()
      const startPeriod = durationMs(healthcheck!.options['start-period'] ?? '0s')
      const timeout = durationMs(healthcheck!.options.timeout ?? '30s')
      const port = await freePort()
      const metricsPort = await freePort()
      const env = containerEnv(final, { DATABASE_URL: await freshDatabaseUrl(), PORT: String(port), METRICS_PORT: String(metricsPort) })
      const cwd = containerCwd(final)
      const before = readdirSync(cwd).sort()

      const started = performance.now()
      const proc = Bun.spawn(asUser(final, mapExecutable(final, containerArgv(final))), { cwd, env, stdout: 'pipe', stderr: 'pipe' })
      children.push(proc)
      const output = collectOutput(proc)
      const url = `http://127.0.0.1:${port}`
      await waitFor(
        async () => proc.exitCode !== null || (await fetch(`${url}/health`).catch(() => null))?.ok === true,
        30_000,
        () => `the container did not serve:\n${output()}`,
      )
      if (proc.exitCode !== null) throw new Error(`the container exited with ${proc.exitCode}:\n${output()}`)
      const startupMs = performance.now() - started
      if (startPeriod > 0) expect(startupMs).toBeLessThan(startPeriod)

      const ids = userIds(final)
      if (ids && canSwitchUser) {
        const status = readFileSync(`/proc/${proc.pid}/status`, 'utf8')
        expect(/^Uid:\s+(\d+)/m.exec(status)![1]).toBe(String(ids.uid))
      }
      const ready = (await (await fetch(`${url}/ready`)).json()) as { dependencies: { database: unknown } }
      expect(ready.dependencies.database).toEqual({ status: 'ok', kind: 'postgres' })
      expect(await (await fetch(`${url}/`)).text()).toContain('<html')
      // Metrics on their own port (METRICS_HOST=0.0.0.0 in the image), and on the API's (METRICS_ON_API_PORT=on).
      expect((await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).status).toBe(200)
      expect((await fetch(`${url}/metrics`)).status).toBe(200)

      // The HEALTHCHECK command, as written, in the container's environment and as its USER.
      const check = () => {
        const t = performance.now()
        const run = Bun.spawnSync(asUser(final, mapExecutable(final, healthcheck!.argv)), { cwd, env, stdout: 'pipe', stderr: 'pipe', timeout })
        return { exitCode: run.exitCode, ms: performance.now() - t, output: run.stdout.toString() + run.stderr.toString() }
      }
      const healthy = check()
      expect(healthy).toMatchObject({ exitCode: 0 })
      expect(healthy.ms).toBeLessThan(timeout)

      const signal = (final.stopsignal ?? 'SIGTERM') as NodeJS.Signals
      const stopAt = performance.now()
      process.kill(proc.pid, signal)
      const code = await within(proc.exited, DOCKER_STOP_TIMEOUT_MS, 'still running after docker stop timeout')
      expect(code).toBe(0)
      console.log(
        `dockerfile emulation: served after ${Math.round(startupMs)} ms, healthcheck ${Math.round(healthy.ms)} ms, stopped by ${signal} in ${Math.round(performance.now() - stopAt)} ms`,
      )
      expect(check().exitCode).toBe(1) // unhealthy once it is down
      expect(readdirSync(cwd).sort()).toEqual(before)
    }, 300_000)
  })
})

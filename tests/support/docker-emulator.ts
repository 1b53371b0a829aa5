// The Dockerfile, executed without Docker (there is no Docker engine here or in CI). The instructions are read
// from the Dockerfile itself, not copied into this test, so a broken COPY path or a failing RUN fails it:
// - every stage gets a temp directory standing for its `/`; WORKDIR, COPY (from the build context, honouring
//   .dockerignore, or --from an earlier stage) and ENV are applied to it; the build stages' RUNs run with
//   /bin/sh -c in the mapped WORKDIR, with the repo's own bun (the same major.minor as the image) on PATH as
//   `bun` and a fresh HOME (so a fresh package cache: `bun install` reaches the npm registry);
// - the final stage's RUNs are only checked (a `useradd` must create the USER's uid), not run on this host;
// - its ENTRYPOINT + CMD start from a cwd holding no sql/, src/ or node_modules/, with the image's ENV plus
//   DATABASE_URL and a free PORT, as the USER's uid (setpriv, when the test runs as root); the HEALTHCHECK
//   command runs as written and STOPSIGNAL stops it with exit 0 within Docker's 10 s stop timeout.
// Not emulated: the base images' contents (debian:bookworm-slim's libraries are this host's), PID 1 and
// the network namespace.
import { afterAll } from 'bun:test'
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, posix } from 'node:path'
import { ROOT } from './helpers'

export const REPO_BUN = join(ROOT, 'node_modules', '.bin', 'bun')
/** Docker's PATH when an image sets none (debian:bookworm-slim sets none). */
const DOCKER_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']
/** `docker stop` sends STOPSIGNAL, then SIGKILL after this long. */
export const DOCKER_STOP_TIMEOUT_MS = 10_000

// ---------------------------------------------------------------------------------------------------------
// Parsing

export interface Instruction {
  keyword: string
  args: string
  line: number
}

/** Logical instructions: comments and blank lines dropped, backslash continuations joined. */
function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = []
  let buffer = ''
  let start = 0
  text.split('\n').forEach((raw, i) => {
    const trimmed = raw.trim()
    if (trimmed === '' || trimmed.startsWith('#')) return // also inside a continuation, as Docker does
    if (buffer === '') start = i + 1
    const continued = /\\\s*$/.test(raw)
    buffer += (buffer ? ' ' : '') + (continued ? raw.replace(/\\\s*$/, '') : raw).trim()
    if (continued) return
    const match = /^(\S+)\s*(.*)$/s.exec(buffer)!
    out.push({ keyword: match[1]!.toUpperCase(), args: match[2]!.trim(), line: start })
    buffer = ''
  })
  if (buffer) throw new Error(`Dockerfile ends inside a continuation (line ${start})`)
  return out
}

/** Leading `--name=value` / `--flag` options, and the rest. */
function takeFlags(args: string): { flags: Record<string, string>; rest: string } {
  const flags: Record<string, string> = {}
  let rest = args
  for (let m = /^--([a-z-]+)(?:=(\S*))?\s*/.exec(rest); m; m = /^--([a-z-]+)(?:=(\S*))?\s*/.exec(rest)) {
    flags[m[1]!] = m[2] ?? 'true'
    rest = rest.slice(m[0].length)
  }
  return { flags, rest }
}

/** Exec form (a JSON array) as is; shell form through /bin/sh -c, as Docker runs it. */
function commandOf(args: string): { argv: string[]; shellForm: boolean } {
  if (args.startsWith('[')) {
    const argv = JSON.parse(args) as unknown
    if (!Array.isArray(argv) || argv.some((a) => typeof a !== 'string')) throw new Error(`not a JSON string array: ${args}`)
    return { argv: argv as string[], shellForm: false }
  }
  return { argv: ['/bin/sh', '-c', args], shellForm: true }
}

export function parseEnv(args: string): Record<string, string> {
  const env: Record<string, string> = {}
  if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(args)) {
    const [key, ...value] = args.split(/\s+/) // legacy `ENV KEY value`
    env[key!] = value.join(' ')
    return env
  }
  for (const m of args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|'[^']*'|\S*)/g)) {
    const raw = m[2]!
    env[m[1]!] = raw.startsWith('"') ? raw.slice(1, -1).replace(/\\(.)/g, '$1') : raw.startsWith("'") ? raw.slice(1, -1) : raw
  }
  return env
}

/** Go-style durations as Docker takes them: 10s, 1m30s, 500ms. */
export function durationMs(text: string): number {
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }
  let total = 0
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)]
  if (parts.map((p) => p[0]).join('') !== text) throw new Error(`bad duration ${JSON.stringify(text)}`)
  for (const p of parts) total += Number(p[1]) * units[p[2]!]!
  return total
}

// ---------------------------------------------------------------------------------------------------------
// .dockerignore (the moby/patternmatcher rules that matter: *, ?, **, leading /, ! exceptions, last match
// wins, and a pattern matching a directory excludes everything under it)

export function dockerignore(context: string): (rel: string) => boolean {
  const file = join(context, '.dockerignore')
  const rules = (existsSync(file) ? readFileSync(file, 'utf8') : '')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const negated = l.startsWith('!')
      const pattern = posix.normalize((negated ? l.slice(1) : l).trim().replace(/^\/+/, '')).replace(/\/+$/, '')
      let re = ''
      for (let i = 0; i < pattern.length; i++) {
        const c = pattern[i]!
        if (c === '*' && pattern[i + 1] === '*') {
          i++
          if (pattern[i + 1] === '/') {
            i++
            re += '(?:.*/)?'
          } else re += '.*'
        } else if (c === '*') re += '[^/]*'
        else if (c === '?') re += '[^/]'
        else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&')
      }
      return { negated, re: new RegExp(`^${re}$`) }
    })
  return (rel) => {
    const parts = rel.split('/')
    const prefixes = parts.map((_, i) => parts.slice(0, i + 1).join('/'))
    let excluded = false
    for (const rule of rules) if (prefixes.some((p) => rule.re.test(p))) excluded = !rule.negated
    return excluded
  }
}

// ---------------------------------------------------------------------------------------------------------
// Emulation

export interface Stage {
  name: string | undefined
  image: string
  line: number
  /** The temp directory standing for this stage's `/`. */
  root: string
  workdir: string
  env: Record<string, string>
  user: string | undefined
  expose: string[]
  healthcheck: { options: Record<string, string>; argv: string[] } | null | undefined
  stopsignal: string | undefined
  entrypoint: { argv: string[]; shellForm: boolean } | undefined
  cmd: { argv: string[]; shellForm: boolean } | undefined
  /** RUNs of the final stage: checked, not run on this host. */
  unrun: Instruction[]
  /** The sources of each `COPY --from` into this stage. */
  copiedFrom: { stage: string; src: string; dest: string }[]
}

export interface Image {
  instructions: Instruction[]
  stages: Stage[]
  final: Stage
  /** Wall time of each executed RUN. */
  runTimes: { line: number; ms: number }[]
}

const temps: string[] = []
function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  chmodSync(dir, 0o755) // an unprivileged USER must reach the executable, as in the image
  temps.push(dir)
  return dir
}
afterAll(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true })
})

/** An image path inside a stage's stand-in root. */
export function hostPath(stage: Stage, path: string): string {
  return join(stage.root, posix.resolve(stage.workdir, path))
}

/** A stage by its AS name or its index, as --from takes them. */
export function stageNamed(stages: Stage[], name: string): Stage | undefined {
  return stages.find((s, i) => s.name === name || String(i) === name)
}

export function at(ins: Instruction): string {
  return `Dockerfile:${ins.line} ${ins.keyword} ${ins.args}`
}

function copy(stage: Stage, ins: Instruction, stages: Stage[], context: string, ignored: (rel: string) => boolean) {
  const { flags, rest } = takeFlags(ins.args)
  for (const flag of Object.keys(flags)) if (!['from', 'chown', 'chmod', 'link'].includes(flag)) throw new Error(`${at(ins)}: --${flag} is not emulated`)
  const words = rest.startsWith('[') ? (JSON.parse(rest) as string[]) : rest.split(/\s+/)
  if (words.length < 2) throw new Error(`${at(ins)}: needs a source and a destination`)
  const dest = words[words.length - 1]!
  const sources = words.slice(0, -1)
  const wildcard = sources.some((s) => /[*?[]/.test(s))
  const intoDir = dest.endsWith('/') || dest === '.' || sources.length > 1 || wildcard
  if ((sources.length > 1 || wildcard) && !dest.endsWith('/')) throw new Error(`${at(ins)}: with several sources the destination must end with /`)
  const destHost = hostPath(stage, dest)

  const from = flags.from !== undefined ? stageNamed(stages, flags.from) : undefined
  if (flags.from !== undefined && !from) throw new Error(`${at(ins)}: no earlier stage ${flags.from} (copying from an image is not emulated)`)

  // Each source as [host path, path relative to what it is copied from].
  const matched: string[] = []
  for (const src of sources) {
    if (from) {
      const path = join(from.root, posix.resolve(from.workdir, src))
      if (!existsSync(path)) throw new Error(`${at(ins)}: ${src} does not exist in stage ${flags.from} after its build`)
      stage.copiedFrom.push({ stage: flags.from!, src, dest })
      matched.push(path)
      continue
    }
    const rel = posix.normalize(src.replace(/^\/+/, '')).replace(/\/+$/, '') || '.'
    if (rel.startsWith('..')) throw new Error(`${at(ins)}: ${src} is outside the build context`)
    if (/[*?[]/.test(rel)) {
      const hits = [...new Bun.Glob(rel).scanSync({ cwd: context, dot: true, onlyFiles: false })].filter((p) => !ignored(p))
      if (hits.length === 0) throw new Error(`${at(ins)}: no files in the build context match ${src}`)
      matched.push(...hits.map((p) => join(context, p)))
    } else {
      if (rel !== '.' && (ignored(rel) || !existsSync(join(context, rel))))
        throw new Error(`${at(ins)}: ${src} is not in the build context${existsSync(join(context, rel)) ? ' (excluded by .dockerignore)' : ''}`)
      matched.push(join(context, rel))
    }
  }

  for (const path of matched) {
    const filter = from ? undefined : (p: string) => p === context || !ignored(p.slice(context.length + 1))
    if (statSync(path).isDirectory()) {
      mkdirSync(destHost, { recursive: true }) // a directory's contents go into the destination
      cpSync(path, destHost, { recursive: true, filter, dereference: false })
    } else {
      const target = intoDir ? join(destHost, path.split('/').pop()!) : destHost
      mkdirSync(dirname(target), { recursive: true })
      cpSync(path, target)
    }
  }
}

/** The env a RUN sees: the image's ENV over a clean environment (this host's proxy settings pass through). */
function runEnv(stage: Stage, bin: string): Record<string, string> {
  const env: Record<string, string> = { PATH: [bin, ...DOCKER_PATH].join(':'), HOME: join(stage.root, 'root') }
  mkdirSync(env.HOME!, { recursive: true }) // the image's /root: an empty package cache
  for (const key of ['HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy', 'SSL_CERT_FILE', 'NODE_EXTRA_CA_CERTS']) {
    if (process.env[key]) env[key] = process.env[key]!
  }
  return { ...env, ...stage.env }
}

function emulate(context: string): Image {
  const instructions = parseDockerfile(readFileSync(join(context, 'Dockerfile'), 'utf8'))
  const ignored = dockerignore(context)
  const stages: Stage[] = []
  const runTimes: Image['runTimes'] = []
  // `bun` on PATH: the repo's own executable, standing for the one in the oven/bun image.
  const bin = tempDir('ps-docker-bin-')
  symlinkSync(realpathSync(REPO_BUN), join(bin, 'bun'))
  symlinkSync(realpathSync(REPO_BUN), join(bin, 'bunx'))

  const finalIndex = instructions.findLastIndex((i) => i.keyword === 'FROM')
  if (finalIndex < 0) throw new Error('the Dockerfile has no FROM')
  let stage: Stage | undefined
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args)
      if (!m) throw new Error(`${at(ins)}: cannot parse`)
      if (stages.some((s) => s.name === m[1])) throw new Error(`${at(ins)}: FROM an earlier stage is not emulated`)
      stage = {
        name: m[2],
        image: m[1]!,
        line: ins.line,
        root: tempDir('ps-docker-stage-'),
        workdir: '/',
        env: {},
        user: undefined,
        expose: [],
        healthcheck: undefined,
        stopsignal: undefined,
        entrypoint: undefined,
        cmd: undefined,
        unrun: [],
        copiedFrom: [],
      }
      stages.push(stage)
      continue
    }
    if (!stage) throw new Error(`${at(ins)}: before any FROM`)
    const isFinal = ins.line > instructions[finalIndex]!.line
    if (/\$\{?[A-Za-z_]/.test(ins.args) && !['RUN', 'HEALTHCHECK', 'CMD', 'ENTRYPOINT'].includes(ins.keyword))
      throw new Error(`${at(ins)}: variable substitution is not emulated`)
    switch (ins.keyword) {
      case 'WORKDIR':
        stage.workdir = posix.resolve(stage.workdir, ins.args)
        mkdirSync(hostPath(stage, '.'), { recursive: true })
        break
      case 'COPY':
        copy(stage, ins, stages, context, ignored)
        break
      case 'ENV':
        Object.assign(stage.env, parseEnv(ins.args))
        break
      case 'RUN': {
        if (isFinal) {
          stage.unrun.push(ins)
          break
        }
        const { argv } = commandOf(ins.args)
        const cwd = hostPath(stage, '.')
        mkdirSync(cwd, { recursive: true })
        const started = performance.now()
        const run = Bun.spawnSync(argv, { cwd, env: runEnv(stage, bin), stdout: 'pipe', stderr: 'pipe', timeout: 300_000 })
        runTimes.push({ line: ins.line, ms: Math.round(performance.now() - started) })
        if (run.exitCode !== 0) throw new Error(`${at(ins)} exited with ${run.exitCode ?? run.signalCode}:\n${run.stdout.toString()}${run.stderr.toString()}`)
        break
      }
      case 'USER':
        stage.user = ins.args
        break
      case 'EXPOSE':
        stage.expose.push(...ins.args.split(/\s+/))
        break
      case 'HEALTHCHECK': {
        if (/^NONE$/i.test(ins.args)) {
          stage.healthcheck = null
          break
        }
        const { flags, rest } = takeFlags(ins.args)
        const m = /^CMD\s+(.*)$/is.exec(rest)
        if (!m) throw new Error(`${at(ins)}: expected HEALTHCHECK [options] CMD ...`)
        stage.healthcheck = { options: flags, argv: commandOf(m[1]!).argv }
        break
      }
      case 'STOPSIGNAL':
        stage.stopsignal = ins.args
        break
      case 'ENTRYPOINT':
        stage.entrypoint = commandOf(ins.args)
        break
      case 'CMD':
        stage.cmd = commandOf(ins.args)
        break
      case 'LABEL':
        break
      default:
        throw new Error(`${at(ins)}: ${ins.keyword} is not emulated by this test`)
    }
  }
  return { instructions, stages, final: stages[stages.length - 1]!, runTimes }
}

// One build for the whole file, on first use (a failed build fails every test that needs it, once).
let built: { image: Image } | { error: unknown } | undefined
let buildMs = 0
/** How long the emulated build took (0 before image() first ran). */
export const buildTime = () => buildMs
export function image(): Image {
  if (!built) {
    const started = performance.now()
    try {
      built = { image: emulate(ROOT) }
    } catch (error) {
      built = { error }
    }
    buildMs = Math.round(performance.now() - started)
  }
  if ('error' in built) throw built.error
  return built.image
}
export const parsed = () => parseDockerfile(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'))

// ---------------------------------------------------------------------------------------------------------
// Running the final stage as a container

/** ENTRYPOINT + CMD as Docker combines them. */
export function containerArgv(stage: Stage): string[] {
  if (stage.entrypoint?.shellForm) return stage.entrypoint.argv // a shell-form ENTRYPOINT ignores CMD
  const argv = [...(stage.entrypoint?.argv ?? []), ...(stage.cmd?.argv ?? [])]
  if (argv.length === 0) throw new Error('no ENTRYPOINT or CMD')
  return argv
}

/** An image path in argv[0] mapped into the stand-in root; a bare name looked up on the image's PATH. */
export function mapExecutable(stage: Stage, argv: string[]): string[] {
  const [exe, ...rest] = argv
  if (exe!.startsWith('/')) return [existsSync(join(stage.root, exe!)) ? join(stage.root, exe!) : exe!, ...rest]
  for (const dir of (stage.env.PATH ?? DOCKER_PATH.join(':')).split(':')) {
    if (existsSync(join(stage.root, dir, exe!))) return [join(stage.root, dir, exe!), ...rest]
  }
  return argv
}

/** The USER as uid and gid; a name resolved through the final stage's `useradd --uid`. */
export function userIds(stage: Stage): { uid: number; gid: number } | null {
  if (!stage.user) return null
  const [user, group] = stage.user.split(':')
  const created = stage.unrun.map((r) => /\buseradd\b.*--uid[= ](\d+).*\s(\S+)\s*$/.exec(r.args)).find((m) => m && (m[1] === user || m[2] === user))
  const uid = /^\d+$/.test(user!) ? Number(user) : created ? Number(created[1]) : NaN
  if (Number.isNaN(uid)) throw new Error(`USER ${stage.user}: no useradd --uid creates it`)
  // In the image the group is the one useradd made (unprivileged); here the uid stands in for it.
  return { uid, gid: group && /^\d+$/.test(group) ? Number(group) : uid }
}

export const canSwitchUser = process.getuid?.() === 0 && Bun.which('setpriv') !== null
export function asUser(stage: Stage, argv: string[]): string[] {
  const ids = userIds(stage)
  if (!ids || !canSwitchUser) return argv // not root here: run as ourselves, skip only the uid switch
  return ['setpriv', `--reuid=${ids.uid}`, `--regid=${ids.gid}`, '--clear-groups', '--', ...argv]
}

/** The container's environment: Docker's PATH and HOME, the image's ENV, then `docker run -e` values. */
export function containerEnv(stage: Stage, extra: Record<string, string>): Record<string, string> {
  return { PATH: DOCKER_PATH.join(':'), HOME: join(stage.root, 'home', 'nobody-here'), HOSTNAME: 'emulated', ...stage.env, ...extra }
}

/** The container's cwd: the final stage's WORKDIR, which must hold nothing of the source tree. */
export function containerCwd(stage: Stage): string {
  const cwd = hostPath(stage, '.')
  mkdirSync(cwd, { recursive: true })
  return cwd
}

export const children: ReturnType<typeof Bun.spawn>[] = []
afterAll(async () => {
  for (const child of children) {
    if (child.exitCode === null && !child.killed) process.kill(child.pid, 'SIGKILL')
    await child.exited
  }
})

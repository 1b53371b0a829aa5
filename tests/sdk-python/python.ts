// Running the Python worker SDK (sdk/python) from bun tests: which python to use, and a scenario process
// (tests/sdk-python/worker.py) whose JSON lines the test waits for.
//
// Which python: PYTHON when set (only that one), else /usr/bin/python3 (Debian's, where `.ci/run` installs python3-websockets
// with apt), else `python3` on PATH (which may be a pyenv shim for another version without websockets). The
// first that imports `websockets` wins. None: the tests are skipped with a warning on a developer's machine,
// and fail in CI (`CI` set, or PYTHON_SDK_REQUIRED=1, which `.ci/run` exports), so CI never skips silently.
import { expect } from 'bun:test'
import { collectOutput, ROOT, waitFor } from '../support/helpers'

/** PYTHON, when set, is the only one tried: a test run can pin (or, to check the CI rule, break) the choice. */
const CANDIDATES = process.env.PYTHON ? [process.env.PYTHON] : ['/usr/bin/python3', 'python3']

function importsWebsockets(python: string): boolean {
  try {
    return Bun.spawnSync([python, '-c', 'import websockets'], { stdout: 'ignore', stderr: 'ignore' }).exitCode === 0
  } catch {
    return false // not installed at that path
  }
}

export const PYTHON: string | null = CANDIDATES.find(importsWebsockets) ?? null

const flag = (value: string | undefined) => Boolean(value) && value !== '0' && value !== 'false'
/** Missing python/websockets is a failure here rather than a skip. */
export const PYTHON_REQUIRED = flag(process.env.CI) || flag(process.env.PYTHON_SDK_REQUIRED)

export const MISSING_PYTHON = `no python with websockets (tried ${CANDIDATES.join(', ')}): apt-get install -y python3-websockets, or set PYTHON`

if (!PYTHON && !PYTHON_REQUIRED) console.warn(`tests/sdk-python skipped: ${MISSING_PYTHON}`)

export const SDK_DIR = `${ROOT}sdk/python`

export interface PythonRun {
  /** Every JSON line printed so far. */
  lines: any[]
  /** Waits for the first line matching, and returns it. */
  next(match: (line: any) => boolean, what: string, timeoutMs?: number): Promise<any>
  send(line: string): void
  exited: Promise<number>
  output: () => string
  kill(): void
}

/** Runs one scenario of tests/sdk-python/worker.py with the SDK on PYTHONPATH. */
export function runScenario(scenario: string, env: Record<string, string>): PythonRun {
  if (!PYTHON) throw new Error(MISSING_PYTHON)
  const proc = Bun.spawn([PYTHON, 'tests/sdk-python/worker.py', scenario], {
    cwd: ROOT,
    env: { ...process.env, PYTHONPATH: SDK_DIR, PYTHONUNBUFFERED: '1', ...env } as Record<string, string>,
    stdin: 'pipe',
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const output = collectOutput(proc)
  const lines: any[] = []
  let seen = 0
  const parse = () => {
    const text = output()
    const complete = text.slice(0, text.lastIndexOf('\n') + 1)
    const all = complete.split('\n')
    for (; seen < all.length - 1; seen++) {
      const line = all[seen]!
      if (line.startsWith('{')) {
        try {
          lines.push(JSON.parse(line))
        } catch {}
      }
    }
  }
  return {
    lines,
    output,
    exited: proc.exited,
    async next(match, what, timeoutMs = 10_000) {
      let found: any
      await waitFor(
        () => {
          parse()
          found = lines.find(match)
          return found !== undefined
        },
        timeoutMs,
        () => `${what} from the python worker; it printed:\n${output()}`,
      )
      return found
    },
    send(line) {
      proc.stdin.write(`${line}\n`)
      proc.stdin.flush()
    },
    kill() {
      if (proc.exitCode === null) proc.kill('SIGKILL')
    },
  }
}

/** The scenario ends on its own (after `send`) with exit code 0. */
export async function endsCleanly(run: PythonRun): Promise<void> {
  const code = await run.exited
  if (code !== 0) console.error(run.output())
  expect(code).toBe(0)
}

// The Python SDK's own unit tests (sdk/python/tests, `python3 -m unittest`), run as part of the suite.
import { expect, it } from 'bun:test'
import { PYTHON, SDK_DIR } from './python'

it.skipIf(!PYTHON)(
  'sdk/python passes its unit tests (python -m unittest)',
  async () => {
    const proc = Bun.spawn([PYTHON!, '-m', 'unittest', 'discover', '-s', 'tests', '-t', '.'], {
      cwd: SDK_DIR,
      env: { ...process.env, PYTHONPATH: SDK_DIR },
      stdout: 'pipe',
      stderr: 'pipe',
    })
    const [code, stderr] = await Promise.all([proc.exited, new Response(proc.stderr).text()])
    if (code !== 0) console.error(stderr)
    expect(stderr).toMatch(/Ran \d+ tests/)
    expect(stderr).toMatch(/\nOK\s*$/)
    expect(code).toBe(0)
  },
  30_000,
)

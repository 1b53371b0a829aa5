// bench queue's Python row: jobs/s of the Python worker SDK (sdk/python) at concurrency 50 with 5
// awaited progress updates, on the same server and workload as the TypeScript SDK's run in the same round.
// The worker runs in its own python process (bench/queue/python_worker.py); its CPU is counted as `client`.
// Python: PYTHON, else /usr/bin/python3 (Debian's python3-websockets), else `python3`; none → no row, a note.
import { BENCH_DIR, type Report } from '../lib'
import { type Cpu, cpuNow, cpuSince } from './hot-path'

const ROOT = new URL('../..', import.meta.url).pathname

function findPython(): string | null {
  for (const python of process.env.PYTHON ? [process.env.PYTHON] : ['/usr/bin/python3', 'python3']) {
    try {
      if (Bun.spawnSync([python, '-c', 'import websockets'], { stdout: 'ignore', stderr: 'ignore' }).exitCode === 0) return python
    } catch {} // not there
  }
  return null
}

export const PYTHON = findPython()

/** One run over `jobs` processes of `type`, already enqueued: jobs/s and the CPU per job (ms) of the server, Postgres, Redis and the python worker. */
export async function pythonWorkerRun(
  server: { url: string; pid: number },
  workerToken: string,
  type: string,
  jobs: number,
  concurrency: number,
  before: Cpu,
): Promise<{ rate: number; cpu: Cpu }> {
  if (!PYTHON) throw new Error('no python with websockets')
  const proc = Bun.spawn([PYTHON, `${BENCH_DIR}queue/python_worker.py`, server.url, workerToken, type, String(jobs), String(concurrency), '1'], {
    env: { ...process.env, PYTHONPATH: `${ROOT}sdk/python` },
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const [out, err] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()])
  await proc.exited
  const spent = cpuSince(before, cpuNow(server.pid))
  try {
    const result = JSON.parse(out.trim().split('\n').pop() ?? '') as { jobs_per_s: number; cpu_s: number }
    const cpu = { server: spent.server, postgres: spent.postgres, redis: spent.redis, client: spent.client + result.cpu_s }
    const perJob = (s: number) => (s * 1000) / jobs
    return {
      rate: result.jobs_per_s,
      cpu: { server: perJob(cpu.server), postgres: perJob(cpu.postgres), redis: perJob(cpu.redis), client: perJob(cpu.client) },
    }
  } catch {
    throw new Error(`python worker failed (exit ${proc.exitCode}):\n${out.slice(-2000)}\n${err.slice(-2000)}`)
  }
}

/** The row beside the TypeScript SDK's median of the same rounds; a note when python was missing. */
export function addPythonRow(report: Report, medians: Record<string, number>, cpu: Cpu | null): void {
  const py = medians['python worker with progress']
  const ts = medians['processes with progress']
  if (py === undefined || ts === undefined) {
    report.note(`Python worker row skipped: no python with websockets (apt-get install -y python3-websockets, or set PYTHON)`)
    return
  }
  report.add({
    figure: 'jobs/s with 5 progress updates, Python worker SDK (vs the TypeScript SDK)',
    value: py,
    unit: 'jobs/s',
    ceiling: ts,
    ceilingLabel: 'TS SDK',
    ratio: py / ts,
    goal: '≥ 0.5×',
    pass: py >= 0.5 * ts,
  })
  if (cpu) {
    report.note(
      `CPU per job, Python worker, 5 progress: server ${cpu.server.toFixed(3)}, Postgres ${cpu.postgres.toFixed(3)}, python worker and enqueue ${cpu.client.toFixed(3)}, Redis ${cpu.redis.toFixed(3)} ms`,
    )
  }
}

// The closing table of the fault-injection suite: each scenario records what was injected, the invariant
// it checks and the result. Each file prints its own rows when it ends; once every scenario of the suite
// has reported (bun test shares this module between the files of one run), the whole table is printed too.
import { afterAll, it } from 'bun:test'

export interface ScenarioRow {
  n: number
  scenario: string
  injected: string
  invariant: string
  result: string
}

const SCENARIO_COUNT = 7
const shared = globalThis as unknown as { __faultRows?: Map<number, ScenarioRow>; __faultPrinted?: boolean }
const rows = (shared.__faultRows ??= new Map())

/**
 * A scenario as a test: records pass (with a short note from the body), FAIL, or skipped.
 * The body may return a note ("3 streams, 25 frames") shown in the result column.
 */
export function scenario(row: Omit<ScenarioRow, 'result'>, body: () => Promise<string | void>, timeoutMs?: number) {
  rows.set(row.n, { ...row, result: 'not run' })
  it(
    `#${row.n} ${row.scenario}: ${row.invariant}`,
    async () => {
      try {
        const note = await body()
        rows.set(row.n, { ...row, result: note ? `pass (${note})` : 'pass' })
      } catch (error) {
        rows.set(row.n, {
          ...row,
          result: `FAIL: ${String((error as Error)?.message ?? error)
            .split('\n')[0]!
            .slice(0, 100)}`,
        })
        throw error
      }
    },
    timeoutMs,
  )
}

export function skipped(row: Omit<ScenarioRow, 'result'>, why: string) {
  rows.set(row.n, { ...row, result: `skipped (${why})` })
}

/** Registers the per-file printer; call once at the top of each fault file with its scenario numbers. */
export function reportAfterAll(numbers: number[]) {
  afterAll(() => {
    printTable(
      `fault injection: ${numbers.map((n) => `#${n}`).join(', ')}`,
      numbers.map((n) => rows.get(n)).filter((r) => r !== undefined),
    )
    if (!shared.__faultPrinted && rows.size >= SCENARIO_COUNT && [...rows.values()].every((r) => r.result !== 'not run')) {
      shared.__faultPrinted = true
      printTable(
        'fault injection: closing table',
        [...rows.values()].sort((a, b) => a.n - b.n),
      )
    }
  })
}

function printTable(title: string, list: ScenarioRow[]) {
  const header = ['#', 'scenario', 'injected', 'invariant', 'result']
  const cells = list.map((r) => [String(r.n), r.scenario, r.injected, r.invariant, r.result])
  const widths = header.map((h, i) => Math.min(i === 0 ? 2 : 60, Math.max(h.length, ...cells.map((c) => c[i]!.length))))
  const wrap = (text: string, width: number) => {
    const lines: string[] = []
    let line = ''
    for (const word of text.split(' ')) {
      if (line && line.length + 1 + word.length > width) {
        lines.push(line)
        line = word
      } else line = line ? `${line} ${word}` : word
    }
    lines.push(line)
    return lines
  }
  const out: string[] = ['', `== ${title} ==`]
  const rule = widths.map((w) => '-'.repeat(w)).join('-+-')
  const emit = (row: string[]) => {
    const wrapped = row.map((c, i) => wrap(c, widths[i]!))
    const height = Math.max(...wrapped.map((w) => w.length))
    for (let k = 0; k < height; k++) out.push(wrapped.map((w, i) => (w[k] ?? '').padEnd(widths[i]!)).join(' | '))
  }
  emit(header)
  out.push(rule)
  for (const row of cells) {
    emit(row)
    out.push(rule)
  }
  console.log(out.join('\n'))
}

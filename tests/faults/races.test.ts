// Fault: 200 concurrent cancel / retry / review / worker complete / fail / claim on the same few processes,
// twice over. Every process ends in a state the machine allows, and its event log replays to that state
// through allowed transitions only, with exactly one event per transition that was acknowledged.
import { describe, expect } from 'bun:test'
import { LIVE_VERSION_JUMP } from '../../src/processes/live'
import { TRANSITIONS, type Status } from '../../src/processes/states'
import { createTenant, listeningServer, testDatabase, workerToken } from '../support/helpers'
import { TestWorker } from '../support/worker-client'
import { Traffic } from './clients'
import { reportAfterAll, scenario } from './report'

const PROCESSES = 12
const OPS_PER_WAVE = 200
const WAVES = 2
reportAfterAll([5])

/** A small seeded generator, so a failing mix can be replayed: the seed is in the failure message. */
function random(seed: number) {
  let s = seed >>> 0
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    return s / 2 ** 32
  }
}

describe('racing transitions', async () => {
  const { db } = await testDatabase()
  const server = await listeningServer({ PROGRESS_PERSIST_MS: '20' }, db)
  const tenant = await createTenant(db.sql)
  const wtoken = await workerToken(db.sql)
  const traffic = new Traffic()

  scenario(
    {
      n: 5,
      scenario: 'Racing transitions',
      injected: `${WAVES} waves of ${OPS_PER_WAVE} concurrent cancel/retry/approve/discard (REST) and complete/review/fail/claim (3 workers) on ${PROCESSES} processes in every status`,
      invariant: 'each process ends in an allowed state; its event log replays to it through allowed transitions only, one event per acknowledged transition',
    },
    async () => {
      const seed = Number(process.env.FAULTS_SEED ?? Date.now() % 1_000_000)
      const rand = random(seed)
      const pick = <T>(list: readonly T[]) => list[Math.floor(rand() * list.length)]!
      const base = server.url
      // Three workers; w1 holds the first leases, the others compete for whatever becomes pending.
      const workers = await Promise.all([0, 1, 2].map(() => TestWorker.connect(base, wtoken)))
      for (const [i, w] of workers.entries()) await w.request({ op: 'hello', worker_id: `race-w${i}` })
      const [w1] = workers as [TestWorker, ...TestWorker[]]
      const attempts = new Map<number, number>()

      type Outcome = { id: number | null; op: string; applied: boolean; answer: string }
      const outcomes: Outcome[] = []
      const rest = async (id: number, action: string) => {
        const path = action === 'approve' || action === 'discard' ? 'review' : action
        const body = path === 'review' ? JSON.stringify({ decision: action }) : undefined
        const r = await traffic.json(`${base}/processes/${id}/${path}`, { method: 'POST', token: tenant.token, body })
        outcomes.push({ id, op: action, applied: r.status === 200, answer: r.status === 200 ? '200' : `${r.status} ${r.body?.error?.code}` })
      }
      const frame = async (w: TestWorker, id: number, op: string) => {
        // With the attempt it was claimed with, or without one (the lease holder's id alone).
        const attempt = rand() < 0.5 ? { attempt: attempts.get(id) ?? 1 } : {}
        const f =
          op === 'complete'
            ? { op, process_id: id, ...attempt, result_summary: { by: 'race' } }
            : op === 'review'
              ? { op: 'complete', process_id: id, review: true, ...attempt }
              : { op: 'fail', process_id: id, error: 'raced', ...attempt }
        const reply = await w.request(f)
        // `repeated` acks say the outcome was already there: acknowledged, not applied again.
        outcomes.push({
          id,
          op,
          applied: reply.op === 'ack' && !reply.repeated,
          answer: reply.op === 'ack' ? (reply.repeated ? 'ack repeated' : 'ack') : `error ${reply.code}`,
        })
      }
      const claim = async (w: TestWorker, type: string) => {
        const reply = await w.request({ op: 'claim', types: [type] })
        if (reply.process) attempts.set(reply.process.id, reply.process.attempts)
        outcomes.push({ id: reply.process?.id ?? null, op: 'claim', applied: reply.process !== null, answer: reply.op })
      }
      // Final-making operations are rarer, so that processes go round failed → pending → running a few times.
      const KINDS = ['cancel', 'retry', 'retry', 'approve', 'discard', 'complete', 'review', 'fail', 'fail', 'claim', 'claim', 'claim'] as const

      const ids: number[] = []
      const eventsBefore = new Map<number, number>()
      for (let wave = 0; wave < WAVES; wave++) {
        // Fresh processes for each wave, spread over the statuses: a quarter stay pending, the rest run, and
        // of those a third wait for review and a third have failed.
        const type = `race_${wave}`
        const waveIds: number[] = []
        for (let i = 0; i < PROCESSES; i++)
          waveIds.push((await traffic.json(`${base}/processes`, { method: 'POST', token: tenant.token, body: JSON.stringify({ type }) })).body.id)
        const running: number[] = []
        for (let i = 0; i < (PROCESSES * 3) / 4; i++) {
          const run = (await w1.request({ op: 'claim', types: [type] })).process
          attempts.set(run.id, run.attempts)
          running.push(run.id)
        }
        for (const id of running.slice(0, PROCESSES / 4))
          expect((await w1.request({ op: 'complete', process_id: id, review: true, attempt: 1 })).op).toBe('ack')
        for (const id of running.slice(PROCESSES / 4, PROCESSES / 2))
          expect((await w1.request({ op: 'fail', process_id: id, error: 'boom', attempt: 1 })).op).toBe('ack')
        for (const id of waveIds) eventsBefore.set(id, (await db.sql`select id from process_events where process_id = ${id}`).length)
        ids.push(...waveIds)

        const ops: Array<() => Promise<void>> = []
        for (let i = 0; i < OPS_PER_WAVE; i++) {
          const id = pick(waveIds)
          const kind = pick(KINDS)
          if (kind === 'claim') ops.push(() => claim(pick(workers), type))
          else if (kind === 'complete' || kind === 'review' || kind === 'fail') ops.push(() => frame(pick(workers), id, kind))
          else ops.push(() => rest(id, kind))
        }
        await Promise.all(ops.map((op) => op()))
      }

      // No server error of any kind; every refusal is one the contract names.
      expect(traffic.serverErrors).toEqual([])
      const answers = new Set(outcomes.map((o) => `${o.op}: ${o.answer}`))
      for (const answer of answers)
        expect(answer).toMatch(/: (200|409 invalid_transition|ack|ack repeated|claimed|error (not_owner|invalid_transition|cancelled))$/)

      const report: string[] = []
      for (const id of ids) {
        const [p] = await db.sql<{ status: Status; version: number }[]>`select status, version from processes where id = ${id}`
        const events = await db.sql<{ status: Status }[]>`select status from process_events where process_id = ${id} order by id`
        const statuses = events.map((e) => e.status)
        // Replays from pending through allowed transitions only, to the status the process has.
        expect({ id, seed, first: statuses[0] }).toEqual({ id, seed, first: 'pending' })
        for (let i = 1; i < statuses.length; i++) {
          const step = `${statuses[i - 1]} → ${statuses[i]}`
          expect({ id, seed, step, allowed: (TRANSITIONS[statuses[i - 1]!] as readonly Status[]).includes(statuses[i]!) }).toEqual({
            id,
            seed,
            step,
            allowed: true,
          })
        }
        expect({ id, seed, replayed: statuses.at(-1) }).toEqual({ id, seed, replayed: p!.status })
        // One event per transition: the race added exactly as many events as it acknowledged transitions,
        // and (no progress was written) every version is one event; a change of a running process made by
        // anyone but its lease holder (a user's cancel) adds LIVE_VERSION_JUMP instead of 1.
        const applied = outcomes.filter((o) => o.id === id && o.applied).length
        expect({ id, seed, added: statuses.length - eventsBefore.get(id)! }).toEqual({ id, seed, added: applied })
        const fromRunning = statuses.slice(0, -1).filter((st) => st === 'running').length
        const jumps = (p!.version - statuses.length) / (LIVE_VERSION_JUMP - 1)
        expect({ id, seed, jumps: Number.isInteger(jumps) && jumps >= 0 && jumps <= fromRunning }).toEqual({ id, seed, jumps: true })
        report.push(p!.status)
      }
      for (const w of workers) w.close()
      const applied = outcomes.filter((o) => o.applied).length
      const byStatus: Record<string, number> = {}
      for (const s of report) byStatus[s] = (byStatus[s] ?? 0) + 1
      const finals = Object.entries(byStatus)
      return `seed ${seed}: ${outcomes.length} ops, ${applied} applied, ${outcomes.length - applied} refused cleanly; finals ${finals.map(([s, n]) => `${n} ${s}`).join(', ')}`
    },
  )
})

// A failed attempt's stack: a fail frame may carry one, kept on the process (error_stack) and on the event the
// fail appended, cut at STACK_MAX_CHARS, cleared by a retry; a fail frame without one is as valid as ever. The
// TypeScript worker SDK sends its thrown Error's stack. Against a real listening server and real sockets.
import { describe, expect, it } from 'bun:test'
import WebSocket from 'ws'
import { connectWorker, type WebSocketConstructor } from '@processes/client/worker'
import { STACK_MAX_CHARS } from '../../src/processes/model'
import { createTenant, listeningServer, restAs, testDatabase, waitFor, workerToken } from '../support/helpers'
import { TestWorker } from '../support/worker-client'
import { uniqueType } from './drive'

const { db } = await testDatabase()
const server = await listeningServer({}, db)
const tenant = await createTenant(db.sql)
const wtoken = await workerToken(db.sql)
const rest = restAs(server.url, tenant.token)

/** A process of a new type, claimed by a raw test worker. */
async function claimed(worker: TestWorker) {
  const type = uniqueType('stack')
  const p = await rest.create(type)
  const reply = await worker.request({ op: 'claim', types: [type] })
  expect(reply.process?.id).toBe(p.id)
  return reply.process
}

describe('the stack of a failed attempt', () => {
  it('is kept on the process and on its fail event, and cleared by a retry', async () => {
    const worker = await TestWorker.connect(server.url, wtoken)
    try {
      const p = await claimed(worker)
      const stack = 'Error: disk full\n    at write (/app/jobs/export.ts:41:11)\n    at run (/app/jobs/export.ts:12:3)'
      const ack = await worker.request({ op: 'fail', process_id: p.id, attempt: p.attempts, error: 'disk full', stack })
      expect(ack.op).toBe('ack')
      const failed = await rest.get(p.id)
      expect(failed).toMatchObject({ status: 'failed', error: 'disk full', error_stack: stack })
      const events = await rest.events(p.id)
      expect(events.at(-1)).toMatchObject({ status: 'failed', message: 'disk full', stack })
      expect(events.slice(0, -1).every((e) => e.stack === null)).toBe(true)
      const retried = await fetch(`${server.url}/processes/${p.id}/retry`, { method: 'POST', headers: rest.auth })
      expect(retried.status).toBe(200)
      expect(await retried.json()).toMatchObject({ status: 'pending', error: null, error_stack: null })
      // The event keeps the stack of the attempt it records.
      expect((await rest.events(p.id)).find((e) => e.status === 'failed')?.stack).toBe(stack)
    } finally {
      worker.close()
    }
  })

  it('accepts a fail without a stack as before, and cuts a long one at STACK_MAX_CHARS', async () => {
    const worker = await TestWorker.connect(server.url, wtoken)
    try {
      const plain = await claimed(worker)
      expect((await worker.request({ op: 'fail', process_id: plain.id, error: 'no stack' })).op).toBe('ack')
      expect(await rest.get(plain.id)).toMatchObject({ status: 'failed', error: 'no stack', error_stack: null })

      const long = await claimed(worker)
      const stack = `Error: deep\n${'    at f (/x.ts:1:1)\n'.repeat(500)}`
      expect(stack.length).toBeGreaterThan(STACK_MAX_CHARS)
      const longAck = await worker.request({ op: 'fail', process_id: long.id, error: 'deep', stack })
      expect(longAck).toMatchObject({ op: 'ack' })
      const kept = (await rest.get(long.id)).error_stack as string
      expect(kept.length).toBeLessThanOrEqual(STACK_MAX_CHARS)
      expect(kept.startsWith('Error: deep\n')).toBe(true)
      expect(kept).toEndWith(`(cut at ${STACK_MAX_CHARS} characters)`)

      // Not a string: refused as any invalid frame is, the connection stays open and the lease with it.
      const bad = await claimed(worker)
      const refused = await worker.request({ op: 'fail', process_id: bad.id, error: 'x', stack: 42 })
      expect(refused).toMatchObject({ op: 'error', code: 'invalid_message' })
      expect((await rest.get(bad.id)).status).toBe('running')
    } finally {
      worker.close()
    }
  })

  it("is sent by the TypeScript worker SDK from the handler's thrown Error", async () => {
    const type = uniqueType('sdk_stack')
    const worker = connectWorker(server.url, wtoken, {
      types: [type],
      WebSocket: WebSocket as unknown as WebSocketConstructor,
      handler() {
        throw new Error('handler broke')
      },
    })
    try {
      const p = await rest.create(type)
      await waitFor(async () => (await rest.get(p.id)).status === 'failed', 10_000)
      const failed = await rest.get(p.id)
      expect(failed.error).toBe('handler broke')
      expect(failed.error_stack).toStartWith('Error: handler broke')
      expect(failed.error_stack).toContain('stack.test.ts')
    } finally {
      await worker.close()
    }
  })
})

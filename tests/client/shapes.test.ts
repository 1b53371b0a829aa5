// The client's copy of the API's shapes against the server's own: the status list and the fields of a Process.
// When the server's process gains a field (the queue work adds `priority`, `run_at`, `max_attempts`), this test
// fails until packages/client/src/shapes.ts's Process and PROCESS_FIELDS carry it too — that is its purpose:
// the published client must not drift from the server it talks to.
import { describe, expect, it } from 'bun:test'
import { PROCESS_FIELDS, PROCESS_STATUSES } from '@processes/client'
import { Process } from '../../src/processes/model'
import { STATUSES } from '../../src/processes/states'

describe("the client's shapes", () => {
  it("lists the server's statuses, in its order", () => {
    expect([...PROCESS_STATUSES]).toEqual([...STATUSES])
  })

  it("names exactly the fields of the server's Process schema", () => {
    expect<string[]>([...PROCESS_FIELDS].sort()).toEqual(Object.keys(Process.properties).sort())
  })
})

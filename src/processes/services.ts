// What the processes feature adds to the wiring (src/wiring.ts): the hub, live states, batched creates and reads.
import type { CreateBatcher } from './create-batcher'
import type { ProcessHub } from './hub-rules'
import type { LiveView } from './live'
import type { ProcessReader } from './reader'

declare module '../wiring' {
  interface Services {
    hub: ProcessHub
    /** This instance's live states (the leases its worker gateway holds): reads show the newest. */
    live: LiveView
    /** Single creates, group-committed (src/processes/create-batcher.ts). */
    creates: CreateBatcher
    /** Batched reads of one process by id (GET /processes/{id}, the stream snapshot). */
    reader: ProcessReader
  }
}

// What the workers feature adds to the wiring (src/wiring.ts): the queue's policy.
import type { QueuePolicy } from './queue'

declare module '../wiring' {
  interface Services {
    /** Attempts, backoff, caps and fair turns of the queue (src/workers/queue.ts). */
    queue: QueuePolicy
  }
}

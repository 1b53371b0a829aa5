// What the hub (src/hub/hub.ts, generic) is told about processes: their JSON, made once per state, and the
// lease rule that sends a state to its worker's channel. The processes' hub also carries the queue's wake-ups
// (src/queues/wakeups.ts) on its `work` signal.
import { Hub, type HubRules } from '../hub/hub'
import { WorkWakeups } from '../queues/wakeups'
import type { Process } from './model'

/**
 * A state's JSON, made once however many streams and Redis channels carry it: the hub hands every listener
 * the same Process object, so the text is cached on it (weakly: it goes when the state does).
 */
const jsonOfState = new WeakMap<Process, string>()
export function processJson(process: Process): string {
  let json = jsonOfState.get(process)
  if (json === undefined) jsonOfState.set(process, (json = JSON.stringify(process)))
  return json
}

/** A state parsed from JSON (a Redis message) keeps that text, so it is not serialised again for its streams. */
export function parsedProcess(json: string): Process {
  const process = JSON.parse(json) as Process
  jsonOfState.set(process, json)
  return process
}

/**
 * Whether a state goes to its worker's channel: the lease holder must hear that the process is no longer
 * running for it (cancelled, failed by a sweep, finished), and only that, so an instance holding a worker's
 * leases is not sent every progress change of its own processes back from Redis.
 */
export const leaseEnded = (process: Process): process is Process & { worker_id: string } => process.worker_id !== null && process.status !== 'running'

export const PROCESS_HUB_RULES: HubRules<Process> = {
  channelPrefix: 'process',
  serialise: processJson,
  parse: parsedProcess,
  workerOf: (process) => (leaseEnded(process) ? process.worker_id : null),
  committedAtMs: (process) => Date.parse(process.updated_at),
}

export class ProcessHub extends Hub<Process> {
  /** Wake-ups of waiting claims: new or retried work, here and on every instance. */
  readonly work = new WorkWakeups(this)

  constructor() {
    super(PROCESS_HUB_RULES)
  }
}

export const createProcessHub = (): ProcessHub => new ProcessHub()

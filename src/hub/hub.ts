// The in-memory hub: committed states, keyed by id (and by workspace, for dashboards, and by worker, for the
// gateway's leases), delivered to this instance's streams and workers. With a Bridge (Redis), every change
// also goes out to the other instances, and this instance listens only to the ids, workspaces and workers its
// own clients watch. It knows nothing of what a state is beyond HubState: its creator gives it the rules
// (HubRules: the wire text, and which worker hears a state); src/processes/hub-rules.ts has the processes'.

/** What the hub reads of a state: its id, its version (a newer one replaces an older), its workspace. */
export interface HubState {
  id: number
  version: number
  workspace_id: number
}

/** What the hub's creator tells it about its states. */
export interface HubRules<T extends HubState> {
  /** The state's wire text (the bridge's payload); called for each group of channels, so cache it if costly. */
  serialise(state: T): string
  /** A state from its wire text (a Redis message). */
  parse(text: string): T
  /** The worker whose channel hears this state, or null (for processes: the holder of a lease it ends). */
  workerOf(state: T): string | null
  /** The channel prefix of one id's states: `<prefix>:<id>` (the processes': `process`). */
  channelPrefix: string
  /** When the state was committed (ms since the epoch), for the hub lag metric of states from Redis. */
  committedAtMs?(state: T): number
}

export type Listener<T> = (state: T) => void

/**
 * A message about one id that is not a state (a process's live output chunk): delivered in order, every one,
 * never conflated or replaced by a newer one as states are. `seq` orders them per id; `text` is the wire JSON.
 */
export interface HubMessage {
  id: number
  seq: number
  text: string
}
export type MessageListener = (message: HubMessage) => void
/**
 * A signal from another instance: a short text on a named channel, neither kept nor ordered with states (the
 * queue's wake-ups, src/queues/wakeups.ts). null: the link to the other instances came back after an outage,
 * and signals sent meanwhile are lost.
 */
export type SignalListener = (payload: string | null) => void

/** What the hub needs from a cross-instance transport; the Redis bridge implements it. */
export interface Bridge<T extends HubState> {
  readonly healthy: boolean
  /** Sends these states to the other instances now: written at once, not at the next tick (Redis: two pipelines). */
  publish(states: readonly T[]): void
  /** Sends these messages (output chunks) to the other instances now, each on its id's output channel. */
  publishMessages?(messages: readonly HubMessage[]): void
  /** A signal to the other instances' listeners of `name` (not to this instance's). */
  publishSignal(name: string, payload: string): void
  subscribe(channel: string): Promise<void>
  unsubscribe(channel: string): void
  close(): Promise<void>
}

export const workspaceChannel = (id: number) => `workspace:${id}`
export const workerChannel = (workerId: string) => `worker:${workerId}`
export const outputChannel = (id: number) => `output:${id}`

export class Hub<T extends HubState = HubState> {
  private readonly byId = new Map<number, Set<Listener<T>>>()
  private readonly byWorkspace = new Map<number, Set<Listener<T>>>()
  private readonly byWorker = new Map<string, Set<Listener<T>>>()
  private readonly byOutput = new Map<number, Set<MessageListener>>()
  // The newest state seen per watched id: a late or echoed copy of an older state is dropped here, and a new
  // watcher's snapshot can start from it (latest).
  private readonly newest = new Map<number, T>()
  private readonly signals = new Map<string, Set<SignalListener>>()
  private bridge: Bridge<T> | null = null
  /** publishAll's batches whose local fan-out waits for the turn's replies (afterReplies). */
  private deferred: Array<readonly T[]> = []
  private deferredScheduled = false
  published = 0
  /** Sees every state committed on this instance, as it is published (job metrics). */
  onPublish: ((states: readonly T[]) => void) | null = null

  constructor(readonly rules: HubRules<T>) {}

  attach(bridge: Bridge<T>) {
    this.bridge = bridge
    for (const name of this.signals.keys()) void bridge.subscribe(name).catch(() => {})
  }

  /** The channel of one id's states (`process:<id>` for processes: HubRules.channelPrefix). */
  idChannel = (id: number) => `${this.rules.channelPrefix}:${id}`

  get bridgeHealthy(): boolean | null {
    return this.bridge ? this.bridge.healthy : null
  }

  /** Watches one id; resolves once changes are guaranteed to arrive (the Redis subscription is active). */
  async watch(id: number, listener: Listener<T>): Promise<() => void> {
    return this.add(this.byId, id, listener, this.idChannel)
  }

  async watchWorkspace(workspaceId: number, listener: Listener<T>): Promise<() => void> {
    return this.add(this.byWorkspace, workspaceId, listener, workspaceChannel)
  }

  /** Watches a worker's channel: the listener hears each state the rules send to it (HubRules.workerOf). */
  async watchWorker(workerId: string, listener: Listener<T>): Promise<() => void> {
    return this.add(this.byWorker, workerId, listener, workerChannel)
  }

  /** Watches one id's messages (output chunks); resolves once they are guaranteed to arrive. */
  async watchMessages(id: number, listener: MessageListener): Promise<() => void> {
    return this.add(this.byOutput, id, listener, outputChannel)
  }

  /**
   * Messages made on this instance (output chunks accepted from a worker): to the other instances, then to
   * this instance's listeners. The bridge writes them on its one publishing connection, in order, so another
   * instance hears them in the order they were made, and before any state published after them.
   */
  publishMessages(messages: readonly HubMessage[]) {
    if (messages.length === 0) return
    this.deliverDeferred()
    this.bridge?.publishMessages?.(messages)
    for (const message of messages) this.deliverMessage(message)
  }

  /** A message arrived (made here, or from Redis). */
  deliverMessage(message: HubMessage) {
    const listeners = this.byOutput.get(message.id)
    if (listeners) for (const listener of listeners) listener(message)
  }

  private async add<K extends number | string, L>(map: Map<K, Set<L>>, key: K, listener: L, channel: (k: K) => string) {
    let set = map.get(key)
    if (!set) map.set(key, (set = new Set()))
    set.add(listener)
    let removed = false
    const remove = () => {
      if (removed) return
      removed = true
      const current = map.get(key)
      if (!current) return
      current.delete(listener)
      if (current.size === 0) {
        map.delete(key)
        if (map === this.byId) this.newest.delete(key as number)
        this.bridge?.unsubscribe(channel(key))
      }
    }
    if (this.bridge) {
      try {
        await this.bridge.subscribe(channel(key))
      } catch {
        // Redis is down: local delivery still works and the bridge resubscribes and resyncs on reconnect.
      }
    }
    return remove
  }

  /** A state was committed on this instance: deliver it here and to every other instance. */
  publish(state: T) {
    this.publishAll([state])
  }

  /**
   * States committed together on this instance. They go to the other instances first (Bridge.publish writes
   * them at once), and only then to this instance's own streams: a fan-out to thousands of local streams takes
   * tens of milliseconds, and the other instances' streams must not wait for it.
   *
   * `afterReplies`: this instance's fan-out waits until the current turn's promise continuations have run
   * (setImmediate), so the acks of the frames that made these states reach their workers before the writes
   * to thousands of streams do (npm run bench -- cluster: acks 112 ms after their frames at 5,000 local streams,
   * when they waited). Anything delivered meanwhile runs the waiting fan-out first: order is kept.
   */
  publishAll(states: readonly T[], o: { afterReplies?: boolean } = {}) {
    if (states.length === 0) return
    this.deliverDeferred()
    this.published += states.length
    this.onPublish?.(states)
    this.bridge?.publish(states)
    if (o.afterReplies) {
      this.deferred.push(states)
      if (!this.deferredScheduled) {
        this.deferredScheduled = true
        setImmediate(() => this.deliverDeferred())
      }
      return
    }
    for (const state of states) this.deliverOne(state)
  }

  /** A state arrived (locally, from Redis, or from a resync read): deliver it if it is newer than what we had. */
  deliver(state: T) {
    this.deliverDeferred()
    this.deliverOne(state)
  }

  private deliverDeferred() {
    this.deferredScheduled = false
    if (this.deferred.length === 0) return
    const batches = this.deferred
    this.deferred = []
    for (const batch of batches) for (const state of batch) this.deliverOne(state)
  }

  private deliverOne(state: T) {
    const listeners = this.byId.get(state.id)
    if (listeners) {
      const seen = this.newest.get(state.id)?.version ?? 0
      if (state.version > seen) {
        this.newest.set(state.id, state)
        for (const listener of listeners) listener(state)
      }
    }
    const workspace = this.byWorkspace.get(state.workspace_id)
    if (workspace) for (const listener of workspace) listener(state)
    if (this.byWorker.size > 0) {
      const workerId = this.rules.workerOf(state)
      const worker = workerId === null ? undefined : this.byWorker.get(workerId)
      if (worker) for (const listener of worker) listener(state)
    }
  }

  /** Sends a signal to the other instances (through the bridge; nothing without one). */
  broadcast(name: string, payload: string) {
    this.bridge?.publishSignal(name, payload)
  }

  /** Listens to a signal of the other instances (see SignalListener). */
  onSignal(name: string, listener: SignalListener): () => void {
    let set = this.signals.get(name)
    if (!set) {
      this.signals.set(name, (set = new Set()))
      void this.bridge?.subscribe(name).catch(() => {})
    }
    set.add(listener)
    return () => set.delete(listener)
  }

  /** A signal arrived from another instance (the bridge), or null after an outage to every listener. */
  deliverSignal(name: string | null, payload: string | null) {
    for (const [n, listeners] of this.signals) if (name === null || n === name) for (const listener of listeners) listener(payload)
  }

  /** The newest state delivered here of a watched id (undefined when unwatched, or nothing came since). */
  latest(id: number): T | undefined {
    return this.newest.get(id)
  }

  watchedIds(): number[] {
    return [...this.byId.keys()]
  }

  watchedWorkspaceIds(): number[] {
    return [...this.byWorkspace.keys()]
  }

  watchedWorkerIds(): string[] {
    return [...this.byWorker.keys()]
  }

  counts() {
    let idListeners = 0
    for (const set of this.byId.values()) idListeners += set.size
    let workspaceListeners = 0
    for (const set of this.byWorkspace.values()) workspaceListeners += set.size
    return {
      ids: this.byId.size,
      idListeners,
      workspaces: this.byWorkspace.size,
      workspaceListeners,
      workers: this.byWorker.size,
    }
  }
}

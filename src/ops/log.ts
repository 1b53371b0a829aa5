// One JSON line per log entry on stdout. Lines are buffered and written together every 50 ms
// (and at shutdown), so a busy server makes one write() per tick rather than one per request.
const LEVELS = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 } as const
export type Level = keyof typeof LEVELS

const FLUSH_MS = 50

export class Logger {
  private lines: string[] = []
  private timer: Timer | null = null
  private readonly min: number
  private timeMs = 0
  private timeText = ''

  constructor(
    level: Level,
    private readonly write: (text: string) => void = (text) => process.stdout.write(text),
  ) {
    this.min = LEVELS[level]
  }

  enabled(level: Exclude<Level, 'silent'>) {
    return LEVELS[level] >= this.min
  }

  debug(msg: string, fields?: object) {
    this.emit('debug', msg, fields)
  }
  info(msg: string, fields?: object) {
    this.emit('info', msg, fields)
  }
  warn(msg: string, fields?: object) {
    this.emit('warn', msg, fields)
  }
  error(msg: string, fields?: object) {
    this.emit('error', msg, fields)
  }

  /**
   * The per-request line (info), written out by hand: the same JSON as `info('request', {...})` gives, at a
   * fraction of the cost of building an object, spreading it and stringifying it on every request.
   */
  request(method: string, route: string, status: number, ms: number, requestId: string) {
    if (LEVELS.info < this.min) return
    this.push(
      `{"time":"${this.time()}","level":"info","msg":"request","method":${jsonString(method)},"route":${jsonString(route)},` +
        `"status":${status},"ms":${Math.round(ms * 100) / 100},"request_id":${jsonString(requestId)}}`,
    )
  }

  private emit(level: Exclude<Level, 'silent'>, msg: string, fields?: object) {
    if (LEVELS[level] < this.min) return
    this.push(JSON.stringify({ time: this.time(), level, msg, ...fields }))
  }

  private push(line: string) {
    this.lines.push(line)
    this.timer ??= setTimeout(() => this.flush(), FLUSH_MS)
  }

  /** The ISO time, made once per millisecond however many lines share it. */
  private time(): string {
    const now = Date.now()
    if (now !== this.timeMs) {
      this.timeMs = now
      this.timeText = new Date(now).toISOString()
    }
    return this.timeText
  }

  flush() {
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    if (this.lines.length === 0) return
    const text = `${this.lines.join('\n')}\n`
    this.lines = []
    this.write(text)
  }
}

/** Methods, routes and request ids are nearly always plain: quote them without JSON.stringify's call. */
const PLAIN = /^[\w ./:*-]*$/
function jsonString(text: string): string {
  return PLAIN.test(text) ? `"${text}"` : JSON.stringify(text)
}

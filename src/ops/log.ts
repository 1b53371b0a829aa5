// One JSON line per log entry on stdout. Lines are buffered and written together every 50 ms
// (and at shutdown), so a busy server makes one write() per tick rather than one per request.
const LEVELS = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 } as const
export type Level = keyof typeof LEVELS

const FLUSH_MS = 50

export class Logger {
  private lines: string[] = []
  private timer: Timer | null = null
  private readonly min: number

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

  private emit(level: Exclude<Level, 'silent'>, msg: string, fields?: object) {
    if (LEVELS[level] < this.min) return
    this.lines.push(JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }))
    this.timer ??= setTimeout(() => this.flush(), FLUSH_MS)
  }

  flush() {
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    if (this.lines.length === 0) return
    const text = this.lines.join('\n') + '\n'
    this.lines = []
    this.write(text)
  }
}

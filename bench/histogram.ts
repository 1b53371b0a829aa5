// Latency histograms for the benchmarks, small enough to import into the load-generator processes.
//
// Wall-clock milliseconds with sub-millisecond precision, comparable across processes on one machine:
// a worker stamps its frame with now(), a stream client subtracts it from its own now() on receipt.
export const now = () => performance.timeOrigin + performance.now()

// Log buckets 1% wide from 10 µs to ~17 min, so client processes can merge theirs.

const H_MIN_MS = 0.01
const H_GROWTH = Math.log(1.01)
export const HISTOGRAM_BUCKETS = 1900

export class Histogram {
  readonly counts: Uint32Array
  count = 0
  max = 0
  sum = 0
  constructor(counts?: ArrayLike<number>) {
    this.counts = new Uint32Array(HISTOGRAM_BUCKETS)
    if (counts) this.merge({ counts: Array.from(counts), count: 0, max: 0, sum: 0 })
  }
  record(ms: number) {
    const i = ms <= H_MIN_MS ? 0 : Math.min(HISTOGRAM_BUCKETS - 1, Math.ceil(Math.log(ms / H_MIN_MS) / H_GROWTH))
    this.counts[i]!++
    this.count++
    this.sum += ms
    if (ms > this.max) this.max = ms
  }
  reset() {
    this.counts.fill(0)
    this.count = this.sum = this.max = 0
  }
  merge(other: { counts: ArrayLike<number>; count: number; max: number; sum: number }) {
    let n = 0
    for (let i = 0; i < HISTOGRAM_BUCKETS; i++) {
      const c = other.counts[i] ?? 0
      this.counts[i]! += c
      n += c
    }
    this.count += n
    this.sum += other.sum
    this.max = Math.max(this.max, other.max)
  }
  /** The upper bound of the bucket holding the q-quantile (≤ 1% above the true value). */
  quantile(q: number): number {
    if (this.count === 0) return NaN
    const target = Math.max(1, Math.ceil(q * this.count))
    let seen = 0
    for (let i = 0; i < HISTOGRAM_BUCKETS; i++) {
      seen += this.counts[i]!
      if (seen >= target) return Math.min(this.max, H_MIN_MS * Math.exp(i * H_GROWTH))
    }
    return this.max
  }
  get mean() {
    return this.count === 0 ? NaN : this.sum / this.count
  }
  toJSON() {
    // Sparse, so a report is small: [bucket, count] pairs.
    const sparse: Array<[number, number]> = []
    for (let i = 0; i < HISTOGRAM_BUCKETS; i++) if (this.counts[i]) sparse.push([i, this.counts[i]!])
    return { sparse, count: this.count, max: this.max, sum: this.sum }
  }
  static fromJSON(j: { sparse: Array<[number, number]>; count: number; max: number; sum: number }): Histogram {
    const h = new Histogram()
    const counts = new Array<number>(HISTOGRAM_BUCKETS).fill(0)
    for (const [i, c] of j.sparse) counts[i] = c
    h.merge({ counts, count: 0, max: j.max, sum: j.sum })
    return h
  }
}

// Rolling read-outs: messages per second and latency percentiles over the
// last few seconds.

/** Counts events and latencies inside a sliding time window. */
export class Window {
  /** Arrival times (ms) of recent events. */
  private readonly times: number[] = [];
  /** Latencies (ms) of recent events that carried a timestamp, with their arrival. */
  private readonly latencies: { at: number; ms: number }[] = [];

  constructor(private readonly spanMs = 3000) {}

  /** Records one event at `now`, with its latency when known. */
  add(now: number, latencyMs?: number): void {
    this.times.push(now);
    if (latencyMs !== undefined && Number.isFinite(latencyMs)) this.latencies.push({ at: now, ms: latencyMs });
    this.trim(now);
  }

  /** Events per second over the window. */
  rate(now: number): number {
    this.trim(now);
    return (this.times.length * 1000) / this.spanMs;
  }

  /** The `q` quantile (0..1) of the latencies in the window, or undefined. */
  latency(now: number, q: number): number | undefined {
    this.trim(now);
    if (this.latencies.length === 0) return undefined;
    const sorted = this.latencies.map((l) => l.ms).sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  }

  private trim(now: number): void {
    const edge = now - this.spanMs;
    while (this.times.length > 0 && this.times[0]! < edge) this.times.shift();
    while (this.latencies.length > 0 && this.latencies[0]!.at < edge) this.latencies.shift();
  }
}

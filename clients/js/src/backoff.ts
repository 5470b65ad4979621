/**
 * Reconnect delays: exponential back-off with "full jitter" (a uniformly
 * random delay between zero and the capped exponential), so a server restart
 * does not bring every client back in the same millisecond.
 */

/** Back-off settings. */
export interface BackoffOptions {
  /** Ceiling of the first retry's delay, in ms (default 500). */
  baseMs?: number;
  /** Largest delay ever waited, in ms (default 30 000). */
  capMs?: number;
}

/** The defaults of {@link BackoffOptions}. */
export const DEFAULT_BACKOFF: Required<BackoffOptions> = { baseMs: 500, capMs: 30_000 };

/**
 * The delay before retry number `attempt` (0 for the first retry):
 * `random() * min(capMs, baseMs * 2^attempt)`, rounded down.
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = {},
  random: () => number = Math.random,
): number {
  const { baseMs, capMs } = { ...DEFAULT_BACKOFF, ...options };
  // 2^attempt overflows to Infinity long after it passed any sane cap;
  // min() keeps that harmless.
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt));
  return Math.floor(random() * ceiling);
}

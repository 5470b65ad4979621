/**
 * What to do when a connection ends: a pure decision from how it ended, so
 * the rules (the table in README.md) are tested without sockets or timers.
 * Also the refusal probe that tells a browser why a handshake failed.
 */

import { WsRealtimeError } from "./errors.js";

/** A handshake refusal as the server answers it over plain HTTP. */
export interface Refusal {
  /** The HTTP status (401, 403, 426 for a good token, 429, 503, …). */
  status: number;
  /** The `error` of the JSON body. */
  error?: string;
  /** The `message` of the JSON body. */
  message?: string;
}

/** How a connection (or an attempt) ended. */
export interface Ending {
  /** Whether the server's `connected` frame arrived (false: the handshake failed). */
  opened: boolean;
  /** The close code (1006 when the socket failed or dropped). */
  code: number;
  /** The close reason. */
  reason: string;
  /** Why the handshake failed, when it did and the probe could tell. */
  refusal?: Refusal;
  /** Whether there is a `getToken`. */
  canRenewToken: boolean;
  /** Whether a 401 already made us ask `getToken` again since the last success. */
  authRetried: boolean;
}

/** What to do next. */
export type NextStep =
  /** Reconnect without waiting; `freshToken` asks `getToken` first. */
  | { kind: "now"; freshToken: boolean; reason: string }
  /** Wait the back-off, then reconnect. */
  | { kind: "backoff"; reason: string }
  /** Give up for good. */
  | { kind: "stop"; error: WsRealtimeError };

/** The rules: which endings retrying cannot fix, and which need no wait. */
export function nextStep(ending: Ending): NextStep {
  const { code, reason, refusal } = ending;
  if (!ending.opened) {
    if (refusal?.status === 401) {
      const detail = `${refusal.error ?? "unauthorized"}: ${refusal.message ?? "the token was refused"}`;
      if (ending.canRenewToken && !ending.authRetried) {
        return { kind: "now", freshToken: true, reason: `HTTP 401 ${detail}` };
      }
      const after = ending.canRenewToken ? " even after getToken gave a fresh one" : "";
      return {
        kind: "stop",
        error: new WsRealtimeError("unauthorized", `the server refused the token with HTTP 401 (${detail})${after}`, {
          status: 401,
          serverCode: refusal.error,
          fatal: true,
        }),
      };
    }
    if (refusal?.status === 403) {
      return {
        kind: "stop",
        error: new WsRealtimeError(
          "forbidden",
          `the server refused the connection with HTTP 403 (${refusal.error ?? "forbidden"}: ${refusal.message ?? ""})`,
          { status: 403, serverCode: refusal.error, fatal: true },
        ),
      };
    }
    // 429, 503, unreachable, or unknown: the server may take us later.
    const why = refusal ? `HTTP ${refusal.status} ${refusal.error ?? ""}`.trim() : reason;
    return { kind: "backoff", reason: why };
  }
  if (code === 1008 && /token expired/i.test(reason)) {
    if (!ending.canRenewToken) {
      return {
        kind: "stop",
        error: new WsRealtimeError("token_expired", "the token expired (close 1008) and there is no getToken to renew it", {
          fatal: true,
        }),
      };
    }
    return { kind: "now", freshToken: true, reason };
  }
  if (code === 1001) {
    // The server is going away (restart, drain): the restarted process or
    // another replica can take us at once.
    return { kind: "now", freshToken: false, reason };
  }
  return { kind: "backoff", reason };
}

/**
 * Learns why a handshake failed: browsers hide the HTTP status from
 * WebSocket code, but a plain GET of the same URL (token included) gets the
 * server's refusal with its JSON body. Undefined when it cannot tell
 * (unreachable, or a cross-origin page the server sends no CORS headers to).
 */
export async function probeRefusal(wsUrl: string, timeoutMs = 5000): Promise<Refusal | undefined> {
  const fetchImpl = (globalThis as { fetch?: typeof fetch }).fetch;
  if (!fetchImpl) return undefined;
  const httpUrl = wsUrl.replace(/^ws(s?):/i, "http$1:");
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    const response = await fetchImpl(httpUrl, { signal: abort.signal, cache: "no-store" });
    let body: { error?: string; message?: string } = {};
    try {
      body = (await response.json()) as typeof body;
    } catch {
      // Not JSON: the status alone will do.
    }
    return { status: response.status, error: body.error, message: body.message };
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

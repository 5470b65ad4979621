/**
 * Finding a WebSocket implementation: the one given in the options, the
 * global one (browsers, Node ≥ 22, Deno, Bun), or the `ws` package in Node
 * versions without a global WebSocket.
 */

import { WsRealtimeError } from "./errors.js";

/** The part of the WebSocket API this client uses (browsers' and `ws`'s agree on it). */
export interface SocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

/** A WebSocket constructor. */
export type WebSocketConstructor = new (url: string) => SocketLike;

/** `readyState` of an open socket. */
export const OPEN = 1;

/** The WebSocket constructor to use. */
export async function resolveWebSocket(
  given?: WebSocketConstructor,
): Promise<WebSocketConstructor> {
  if (given) return given;
  const global = (globalThis as { WebSocket?: unknown }).WebSocket;
  if (typeof global === "function") return global as WebSocketConstructor;
  try {
    // A variable, so bundlers for the browser leave this Node-only path out.
    const name = "ws";
    const mod = (await import(name)) as { WebSocket?: unknown; default?: unknown };
    const found = mod.WebSocket ?? mod.default;
    if (typeof found === "function") return found as WebSocketConstructor;
  } catch {
    // Fall through to the error below.
  }
  throw new WsRealtimeError(
    "no_websocket",
    "no WebSocket implementation: this runtime has no global WebSocket; install the `ws` package (npm install ws) or pass options.WebSocket",
    { fatal: true },
  );
}

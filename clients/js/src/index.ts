/**
 * ws-realtime client: a WebSocket client for ws-realtime servers that
 * reconnects, resubscribes and recovers by itself.
 *
 * ```ts
 * import { WsRealtime } from "ws-realtime-client";
 * const client = new WsRealtime("ws://127.0.0.1:8080/ws", { getToken: fetchToken });
 * client.subscribe("lines", { onMessage: (m) => console.log(m.data) });
 * await client.connect();
 * ```
 */

export { WsRealtime } from "./client.js";
export type {
  ClientStats,
  ConnectedEvent,
  ConnectionState,
  DisconnectedEvent,
  WsRealtimeEvents,
  WsRealtimeOptions,
} from "./client.js";
export { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
export { advanceCursor, streamOf } from "./cursor.js";
export { WsRealtimeError, type WsRealtimeErrorCode } from "./errors.js";
export type { Off } from "./emitter.js";
export type * from "./frames.js";
export type { Message, SubscribedInfo, SubscribeOptions, Subscription } from "./subscriptions.js";
export type { SocketLike, WebSocketConstructor } from "./socket.js";

/**
 * The JSON frames of ws-realtime protocol v1 as this client reads and writes
 * them. Fields added by later server versions (cursors, snapshots, token
 * refresh, conflation) are optional: an older server simply never sends them.
 */

/** `{"type":"connected",…}`: the first frame of every connection. */
export interface ConnectedFrame {
  type: "connected";
  connectionId: string;
  userId: string;
  serverId: string;
  timestamp: string;
}

/** The ack of a `subscribe`. */
export interface SubscribedFrame {
  type: "subscribed";
  id?: number | string;
  channels: string[];
  current: string[];
  /** The channel's cursor at subscribe time (servers with stream state). */
  positions?: Record<string, string>;
  /** For channels asked with `since`: whether every missed message follows. */
  recovered?: Record<string, boolean>;
  /** The rate each channel is conflated to (servers with conflation). */
  maxRate?: Record<string, number>;
}

/** The ack of an `unsubscribe`, or the server dropping channels. */
export interface UnsubscribedFrame {
  type: "unsubscribed";
  id?: number | string;
  channels: string[];
  current: string[];
  /** `"forbidden"` when a refreshed token no longer allows the channels. */
  reason?: string;
}

/** A message on a channel. */
export interface MessageFrame {
  type: "message";
  channel: string;
  /** The stream position, `<stream>:<offset>`. */
  pos?: string;
  /** The payload when it is JSON (or UTF-8 text, as a string). */
  data?: unknown;
  /** The payload, base64-encoded, when it is neither JSON nor UTF-8. */
  b64data?: string;
  /** Set on messages replayed as a snapshot or history, not live. */
  snapshot?: boolean;
}

/** The server's answer to a request it could not carry out. */
export interface ErrorFrame {
  type: "error";
  id?: number | string;
  code: string;
  message: string;
}

/** The answer to a client `ping`. */
export interface PongFrame {
  type: "pong";
  id?: number | string;
  timestamp: number;
}

/** An application-level ping (`WS_APP_PING=true`): answered with `pong`. */
export interface PingFrame {
  type: "ping";
  timestamp: number;
}

/** The server asks for a fresh token before `expiresAt` (Unix ms). */
export interface RefreshRequiredFrame {
  type: "refresh_required";
  expiresAt: number;
}

/** The server took the refreshed token; it now lasts until `expiresAt`. */
export interface RefreshedFrame {
  type: "refreshed";
  id?: number | string;
  expiresAt: number;
}

/** Every frame the server sends. */
export type ServerFrame =
  | ConnectedFrame
  | SubscribedFrame
  | UnsubscribedFrame
  | MessageFrame
  | ErrorFrame
  | PongFrame
  | PingFrame
  | RefreshRequiredFrame
  | RefreshedFrame;

/** A `subscribe` request. */
export interface SubscribeRequest {
  type: "subscribe";
  id: number;
  channels: string[];
  since?: Record<string, string>;
  snapshot?: boolean;
  history?: number;
  maxRate?: number;
}

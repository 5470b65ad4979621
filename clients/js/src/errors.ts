/** The errors the client reports, each with a machine-readable `code`. */

/** Why something failed. */
export type WsRealtimeErrorCode =
  /** The server refused the token with HTTP 401, even after `getToken` was asked again. */
  | "unauthorized"
  /** The server refused the connection with HTTP 403 (e.g. `origin_not_allowed`). */
  | "forbidden"
  /** The connection was closed with 1008 "token expired" and there is no `getToken` to renew it. */
  | "token_expired"
  /** `getToken` threw or returned something other than a non-empty string. */
  | "get_token_failed"
  /** Neither a global `WebSocket` nor the `ws` package is available. */
  | "no_websocket"
  /** The server answered a request with an `error` frame; `serverCode` says which. */
  | "server_error"
  /** The server asked for a token refresh (`refresh_required`) but there is no `getToken`. */
  | "refresh_unavailable"
  /** A frame from the server could not be read as JSON. */
  | "bad_frame"
  /** `close()` was called. */
  | "closed";

/** An error of this client. `code` is stable; `message` is for people. */
export class WsRealtimeError extends Error {
  /** What kind of failure this is. */
  readonly code: WsRealtimeErrorCode;
  /** The HTTP status of a refused connection, when known. */
  readonly status?: number;
  /** The server's own error code (`invalid_token`, `forbidden`, `bad_position`, …), when it gave one. */
  readonly serverCode?: string;
  /** Whether the client gave up reconnecting because of this error. */
  readonly fatal: boolean;

  constructor(
    code: WsRealtimeErrorCode,
    message: string,
    details: { status?: number; serverCode?: string; fatal?: boolean } = {},
  ) {
    super(message);
    this.name = "WsRealtimeError";
    this.code = code;
    this.status = details.status;
    this.serverCode = details.serverCode;
    this.fatal = details.fatal ?? false;
  }
}
